"""Session-wide test infrastructure on the real PostgreSQL, Redis and RabbitMQ.

Each test session gets its own database (migrated, dropped at the end), its own exchange and
queue prefix on RabbitMQ (deleted at the end), its own object-store folder and a Redis database
picked at random from 1-15 (0 is the suite's, and two runs at once rarely share one), all
exported as environment variables so that in-process code and spawned service processes agree.

A test's folder is its marker: tests/unit (``unit``: starts nothing), tests/integration
(``integration``: infrastructure and in-process apps only), tests/e2e (``e2e``: our services
as real processes), tests/security (``security``: hostile requests against real services) and
tests/faults (``faults``: restarts and crashes of infrastructure and of our processes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.core.settings import BaseServiceSettings
from shared.db.migrate import upgrade
from shared.runtime.resources import Resources, close_resources, open_resources
from tests.support.accounts import Account, create_account
from tests.support.infra import (
    AMQP_URL,
    PrivatePostgres,
    PrivateRedis,
    database_url,
    drop_database,
    drop_topology,
    environ,
)
from tests.support.ports import free_port
from tests.support.processes import Processes

RUN_ID = f"{os.getpid()}{uuid.uuid4().hex[:6]}"
DB_NAME = f"vsp_test_{RUN_ID}"
# What another test run writes to Redis meanwhile rarely shows in this one's counts of keys kept.
REDIS_DB = 1 + uuid.uuid4().int % 15
TESTS = Path(__file__).parent
FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "e2e": "e2e",
    "security": "security",
    "faults": "faults",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder (before ``-m`` selects by marker)."""
    for item in items:
        if item.path.is_relative_to(TESTS):
            folder = item.path.relative_to(TESTS).parts[0]
            if folder in FOLDER_MARKERS:
                item.add_marker(FOLDER_MARKERS[folder])


@pytest.fixture(scope="session")
def test_env() -> Iterator[dict[str, str]]:
    """The environment every in-process object and spawned process of this session uses."""
    root = Path(tempfile.mkdtemp(prefix=f"vsp-test-{RUN_ID}-"))
    env = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url(DB_NAME),
        "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "AMQP_URL": AMQP_URL,
        "MQ_PREFIX": f"t{RUN_ID}",
        "MQ_RETRY_DELAYS_SECONDS": "[1,1,1]",
        "STORAGE_BACKEND": "fs",
        "STORAGE_ROOT": str(root / "objects"),
        "SIGNING_SECRET": "test-signing-secret-0123456789",
        # Every test client signs in from 127.0.0.1, and the fuzzer fails sign-ins by the
        # hundred: the per-address limit is proved by tests/e2e/test_accounts.py alone.
        "LOGIN_MAX_FAILURES_PER_ADDRESS": "1000000",
        # One address and one session account make every test's API calls, polling included:
        # the API rate limits are proved by tests/e2e/test_api_rate_limits.py alone.
        "API_RATE_LIMIT_PER_ADDRESS": "1000000",
        "API_RATE_LIMIT_PER_ACCOUNT": "1000000",
        # The session's account uploads all day long, many at once: the upload quotas are
        # proved by tests/e2e/test_quotas.py alone, on accounts and services of its own.
        "QUOTA_CONCURRENT_UPLOADS": "0",
        "QUOTA_UPLOADS_PER_DAY": "0",
        "LOG_LEVEL": "INFO",
        "VSP_TEST_ROOT": str(root),
        # Spawned services reuse compiled bytecode instead of recompiling every import.
        "PYTHONDONTWRITEBYTECODE": "",
    }
    with environ(env):
        upgrade(env["DATABASE_URL"])
        try:
            yield {**os.environ, **env}
        finally:
            asyncio.run(_cleanup(env["MQ_PREFIX"]))
            shutil.rmtree(root, ignore_errors=True)


async def _cleanup(prefix: str) -> None:
    await drop_database(DB_NAME)
    await drop_topology(prefix)


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> BaseServiceSettings:
    # Synchronous tests block the session's event loop for minutes; without heartbeats the
    # broker does not drop the in-process connection meanwhile. Spawned processes keep theirs.
    return BaseServiceSettings(amqp_heartbeat_seconds=0)


@pytest.fixture(scope="session")
def account(test_env: dict[str, str]) -> Account:
    """An uploader account of the session; ``account.headers`` authenticate as it."""
    return create_account(test_env)


@pytest.fixture(scope="session")
def stranger(test_env: dict[str, str]) -> Account:
    """Another uploader of the session: whose videos the session's account does not own."""
    return create_account(test_env)


@pytest.fixture(scope="session")
def admin_account(test_env: dict[str, str]) -> Account:
    """An admin account of the session."""
    return create_account(test_env, role="admin")


@pytest.fixture(scope="session")
def test_root(test_env: dict[str, str]) -> Path:
    return Path(test_env["VSP_TEST_ROOT"])


@pytest.fixture(scope="session")
async def res(settings: BaseServiceSettings) -> AsyncIterator[Resources]:
    """Every client, opened once for the session, against the session's infrastructure."""
    resources = await open_resources(settings, {"db", "redis", "mq", "storage", "http"})
    yield resources
    await close_resources(resources)


@pytest.fixture
def procs(
    test_env: dict[str, str], test_root: Path, request: pytest.FixtureRequest
) -> Iterator[Processes]:
    """Start real service processes; all are stopped after the test."""
    manager = Processes(test_root / "logs" / request.node.name[:60], test_env)
    yield manager
    manager.stop_all()


@pytest.fixture(scope="module")
def module_procs(
    test_env: dict[str, str], test_root: Path, request: pytest.FixtureRequest
) -> Iterator[Processes]:
    """Service processes shared by one test module's tests; stopped after its last test."""
    manager = Processes(test_root / "logs" / request.module.__name__.rsplit(".", 1)[-1], test_env)
    yield manager
    manager.stop_all()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A migrated PostgreSQL cluster of the test's own, which the test may stop and start."""
    db = PrivatePostgres.create()
    try:
        db.migrate()
        yield db
    finally:
        db.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, which the test may kill and start again."""
    server = PrivateRedis.create()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def media_dir(test_root: Path) -> Path:
    path = test_root / "media"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a moto S3 server running in its own process for the session."""
    port = free_port()
    procs = Processes(tmp_path_factory.mktemp("moto"), dict(os.environ), timeout=30)
    try:
        procs.start(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            ready_url=f"http://127.0.0.1:{port}/",
            ready_statuses=range(100, 600),  # any answer: the server is up
        )
        yield f"127.0.0.1:{port}"
    finally:
        procs.stop_all()
