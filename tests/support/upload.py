"""Helpers of the upload tests: tus clients, upload services of their own, raw requests.

tus-js-client (under tests/node) and tuspy are the clients, authenticated with the API key in
``VSP_API_KEY`` (``client_env``). ``python -m tests.support.upload ENDPOINT FILE STORE`` uploads
with tuspy chunk by chunk, as a process of its own that a test may watch die half-way.
``own_service`` starts an upload service whose Redis keys and queued jobs are its own, so that
what its requests leave behind can be counted while other test runs share the machine's Redis;
``send_raw`` sends bytes no HTTP client would. ``tus_storage`` and ``env_store`` put a tus
service on either storage backend and read what it stored.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from shared.core.settings import BaseServiceSettings
from shared.runtime.resources import Resources, close_resources, open_resources
from shared.storage.base import ObjectStore
from shared.storage.filesystem import FilesystemStore
from shared.storage.s3 import S3Store
from tests.support.accounts import Account
from tests.support.infra import private_queues
from tests.support.media import MIB
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.processes import Processes

NODE_DIR = ROOT / "tests" / "node"
# The headers every tus request carries, and those of a PATCH.
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
# The header naming the video a tus upload becomes.
VIDEO_ID = "video-id"


def client_env(account: Account) -> dict[str, str]:
    """The environment of a tus client process uploading as ``account``."""
    return {**os.environ, "VSP_API_KEY": account.api_key}


def video_id_of(url: str, account: Account) -> str:
    """The id of the video a tus upload becomes, as its HEAD names it."""
    response = httpx.head(url, headers={**TUS, **account.headers})
    assert response.status_code == 200, response.text
    return response.headers[VIDEO_ID]


def ensure_node_clients() -> Path:
    """tus-js-client installed under tests/node (``npm ci`` from the lock file if missing)."""
    if not (NODE_DIR / "node_modules" / "tus-js-client").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed for the tus-js-client tests")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)
    return NODE_DIR


@dataclass(frozen=True)
class OwnService:
    url: str
    env: dict[str, str]  # what the service runs with on top of the session's environment

    def settings(self) -> BaseServiceSettings:
        """The service's infrastructure, to count what its requests leave behind."""
        return BaseServiceSettings(
            redis_url=self.env["REDIS_URL"],
            mq_prefix=self.env["MQ_PREFIX"],
            amqp_heartbeat_seconds=0,
        )

    @contextlib.asynccontextmanager
    async def resources(self) -> AsyncIterator[Resources]:
        """The service's store, database, queues and Redis, opened to count what is kept."""
        res = await open_resources(self.settings(), {"db", "redis", "mq", "storage"})
        try:
            yield res
        finally:
            await close_resources(res)


@contextlib.contextmanager
def own_service(
    name: str, test_env: dict[str, str], log_dir: Path, **env: str
) -> Iterator[OwnService]:
    """``vsp serve NAME`` with a Redis database and a broker topology of its own."""
    redis_base = test_env["REDIS_URL"].rsplit("/", 1)[0]
    manager = Processes(log_dir, test_env)
    with private_queues(f"{name}-{uuid.uuid4().hex[:6]}") as queues:
        service_env = {
            **queues,
            "REDIS_URL": f"{redis_base}/{random.randint(1, 15)}",
            **env,
        }
        try:
            proc = manager.service(name, env=service_env)
            yield OwnService(proc.url, service_env)
        finally:
            manager.stop_all()


def tus_storage(backend: str, moto_endpoint: str | None = None) -> dict[str, str]:
    """Environment putting a chunked_upload service on ``backend``: small parts on ``fs`` (so
    that a few MiB make many), a bucket of its own and 5 MiB parts on ``s3`` (moto's server)."""
    if backend == "fs":
        return {"STORAGE_BACKEND": "fs", "CHUNKED_UPLOAD_PART_BYTES": str(64 * 1024)}
    assert moto_endpoint is not None, "S3 needs the moto_endpoint fixture"
    return {
        "STORAGE_BACKEND": "s3",
        "CHUNKED_UPLOAD_PART_BYTES": str(5 * MIB),  # S3's least
        "S3_ENDPOINT": moto_endpoint,
        "S3_ACCESS_KEY": "testing",
        "S3_SECRET_KEY": "testing",
        "S3_BUCKET": f"vsp-tus-{uuid.uuid4().hex[:8]}",
        "S3_REGION": "us-east-1",
    }


def env_store(env: dict[str, str]) -> ObjectStore:
    """The object store a service with environment ``env`` writes to."""
    if env["STORAGE_BACKEND"] == "fs":
        return FilesystemStore(Path(env["STORAGE_ROOT"]))
    return S3Store(
        endpoint=env["S3_ENDPOINT"],
        access_key=env["S3_ACCESS_KEY"],
        secret_key=env["S3_SECRET_KEY"],
        bucket=env["S3_BUCKET"],
        region=env["S3_REGION"],
    )


def part_bytes(env: dict[str, str]) -> int:
    """The storage part size of a service started with ``tus_storage``'s environment."""
    return int(env["CHUNKED_UPLOAD_PART_BYTES"])


async def source_sha256(store: ObjectStore, video_id: str) -> str:
    """The sha-256 of a video's stored source, read back from the store."""
    digest = hashlib.sha256()
    async for chunk in store.get_stream(f"videos/{video_id}/source"):
        digest.update(chunk)
    return digest.hexdigest()


def send_raw(url: str, request: bytes, timeout: float = 5) -> httpx.Response:
    """Send ``request`` as is on a new connection; the answer, read until the server closes.

    A server that refuses early may close while the request is still being written: the answer
    it sent first is still read.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        received = bytearray()
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
                if _complete(bytes(received)):
                    break
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    if not head:
        raise ConnectionError("the server closed the connection without an answer")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(":", 1)) for line in header_lines if ":" in line]
    return httpx.Response(
        int(status_line.split()[1]),
        headers=[(k.strip(), v.strip()) for k, v in headers],
        content=body,
    )


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _tuspy_main(argv: list[str]) -> None:
    """Upload with tuspy chunk by chunk; optionally SIGKILL itself after some bytes."""
    from tusclient import client
    from tusclient.storage.filestorage import FileStorage

    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument("store")
    parser.add_argument("--chunk", type=int, default=MIB)
    parser.add_argument("--die-after", type=int, default=0)
    args = parser.parse_args(argv)
    auth = {"Authorization": f"Bearer {os.environ['VSP_API_KEY']}"}
    uploader = client.TusClient(args.endpoint, headers=auth).uploader(
        args.file,
        chunk_size=args.chunk,
        metadata={"filename": Path(args.file).name, "title": "tuspy upload"},
        store_url=True,
        url_storage=FileStorage(args.store),
    )
    print(f"start {uploader.offset} {uploader.url}", flush=True)
    size = uploader.get_file_size()
    while uploader.offset < size:
        uploader.upload_chunk()
        print(f"offset {uploader.offset}", flush=True)
        if args.die_after and uploader.offset >= args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)
    print(f"done {uploader.url}", flush=True)


if __name__ == "__main__":
    _tuspy_main(sys.argv[1:])


def stream_upload_file(url: str, path: Path, account: Account, **params: str) -> httpx.Response:
    """PUT a file to the streamed upload service at ``url`` as ``account``."""
    with path.open("rb") as fh:
        return httpx.put(
            f"{url}/api/videos",
            params=params,
            content=fh.read(),
            headers={**account.headers, "Content-Type": "application/octet-stream"},
            timeout=60,
        )


def wait_state(origin: str, video_id: str, states: set[str], timeout: float = 120) -> dict:
    """The video's details once its state is one of ``states`` (public or unlisted videos)."""

    def check() -> dict | None:
        body = httpx.get(f"{origin}/api/videos/{video_id}", timeout=5).json()
        return body if body["state"] in states else None

    return wait_for(check, timeout=timeout, what=f"video {video_id} in {states}")
