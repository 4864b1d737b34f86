"""Session-wide test infrastructure on the real PostgreSQL, Redis and RabbitMQ.

Each test session gets its own database (migrated, dropped at the end), its own exchange and
queue prefix on RabbitMQ (deleted at the end) and its own object-store folder, all exported as
environment variables so that in-process code and spawned service processes agree.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.core.settings import BaseServiceSettings
from shared.db.migrate import upgrade
from shared.runtime.resources import Resources, close_resources, open_resources
from tests.support import AMQP_URL, Processes, drop_topology, environ

RUN_ID = f"{os.getpid()}{uuid.uuid4().hex[:6]}"
DB_NAME = f"vsp_test_{RUN_ID}"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def test_env() -> Iterator[dict[str, str]]:
    """The environment every in-process object and spawned process of this session uses."""
    root = Path(tempfile.mkdtemp(prefix=f"vsp-test-{RUN_ID}-"))
    env = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "AMQP_URL": AMQP_URL,
        "MQ_PREFIX": f"t{RUN_ID}",
        "MQ_RETRY_DELAYS_SECONDS": "[1,1,1]",
        "STORAGE_BACKEND": "fs",
        "STORAGE_ROOT": str(root / "objects"),
        "SIGNING_SECRET": "test-signing-secret-0123456789",
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
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    finally:
        await conn.close()
    await drop_topology(prefix)


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> BaseServiceSettings:
    # Synchronous tests block the session's event loop for minutes; without heartbeats the
    # broker does not drop the in-process connection meanwhile. Spawned processes keep theirs.
    return BaseServiceSettings(amqp_heartbeat_seconds=0)


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


@pytest.fixture(scope="session")
def media_dir(test_root: Path) -> Path:
    path = test_root / "media"
    path.mkdir(exist_ok=True)
    return path
