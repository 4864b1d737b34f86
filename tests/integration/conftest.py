"""Integration fixtures: real backing services started as processes."""

from __future__ import annotations

import http.client
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.storage.base import ObjectStore
from shared.storage.filesystem import FilesystemStore
from shared.storage.s3 import S3Store
from tests.support import free_port
from tests.support_origin import listens_on

_RUN_ID = uuid.uuid4().hex[:10]
_buckets = itertools.count(1)


def _answers_http(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
    except OSError:
        return False
    finally:
        conn.close()
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a moto S3 server running in its own process for the session.

    A port that was free a moment ago can be taken before moto binds it; moto then exits and
    starts again on another port. It counts as started once it listens itself and answers.
    """
    folder = tmp_path_factory.mktemp("moto")
    for attempt in range(3):
        port = free_port()
        log_path = folder / f"server-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if listens_on(proc.pid, port) and _answers_http(port):
                break
            time.sleep(0.1)
        else:
            _stop(proc)
            log_text = log_path.read_text(errors="replace")
            if "address already in use" in log_text.lower():
                continue
            pytest.fail(f"moto server did not start:\n{log_text}")
        break
    else:
        pytest.fail("moto server found no free port in three tries")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """An empty store of each backend; S3 gets a fresh bucket, created on first use."""
    backend: ObjectStore
    if request.param == "fs":
        backend = FilesystemStore(tmp_path / "objects")
    else:
        endpoint: str = request.getfixturevalue("moto_endpoint")
        backend = S3Store(
            endpoint=endpoint,
            access_key="testing",
            secret_key="testing",
            bucket=f"vsp-test-{_RUN_ID}-{next(_buckets)}",
            region="us-east-1",
            part_bytes=S3Store.min_part_bytes,
        )
    try:
        yield backend
    finally:
        await backend.close()
