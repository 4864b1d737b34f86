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


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a moto S3 server running in its own process for the session."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not _answers_http(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
