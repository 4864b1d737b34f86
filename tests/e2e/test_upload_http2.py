"""The upload service on Granian: HTTP/1.1, h2c and h2 over TLS, raw bodies and browser forms."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import text

from services.upload.tls import ensure_self_signed
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.infra import private_queues
from tests.support.media import MIB, make_clip, padded_media, sha256_file
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.processes import Processes

GIB = 1024 * MIB


class Upload:
    def __init__(self, url: str, tls_url: str, cert: Path, pid: int) -> None:
        self.url, self.tls_url, self.cert, self.pid = url, tls_url, cert, pid


def start_upload(manager: Processes, root: Path, **env: str) -> Upload:
    cert, key = ensure_self_signed(root / "tls" / "cert.pem", root / "tls" / "key.pem")
    tls_port = free_port()
    proc = manager.service(
        "upload",
        env={
            "UPLOAD_TLS_PORT": str(tls_port),
            "UPLOAD_TLS_CERT_FILE": str(cert),
            "UPLOAD_TLS_KEY_FILE": str(key),
            **env,
        },
    )
    # /readyz answers on the plain port; the TLS listener is started beside it, not before it.
    tls_url = f"https://127.0.0.1:{tls_port}"
    wait_for(
        lambda: tls_ready(f"{tls_url}/readyz", cert),
        timeout=60,
        what="the upload service's TLS listener",
    )
    return Upload(proc.url or "", tls_url, cert, proc.popen.pid)


def tls_ready(url: str, cert: Path) -> bool:
    try:
        context = ssl.create_default_context(cafile=str(cert))
        return httpx.get(url, verify=context, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def upload(test_env: dict[str, str], test_root: Path) -> Iterator[Upload]:
    manager = Processes(test_root / "logs" / "upload-http2", test_env)
    # No worker runs here: the jobs of these uploads go to queues of their own, not to the
    # session's, where the worker of a later test would transcode them first.
    with private_queues("upload-http2") as queues:
        try:
            yield start_upload(manager, test_root, UPLOAD_MAX_BYTES=str(2 * GIB), **queues)
        finally:
            manager.stop_all()


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> Path:
    return make_clip(media_dir / "upload-clip.mp4", seconds=2, size="320x180")


def authorization(account: Account) -> str:
    """The account's ``Authorization`` header, as curl's ``-H`` takes it."""
    return f"Authorization: {account.headers['Authorization']}"


def curl(args: list[str], path: Path, url: str, *headers: str) -> tuple[str, int, dict]:
    """PUT ``path`` streamed by curl; returns the HTTP version, the status and the JSON body."""
    cmd = [
        "curl",
        "-sS",
        "-T",
        str(path),
        "-H",
        "Content-Type: application/octet-stream",
        *[part for h in headers for part in ("-H", h)],
        *args,
        "-w",
        "\n%{http_version} %{http_code}",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    body, _, status = done.stdout.rpartition("\n")
    version, code = status.split()
    return version, int(code), json.loads(body)


async def snapshot(res: Resources) -> tuple[set[str], int, list[Path]]:
    """Stored objects, video rows and temporary files: a refused upload changes none of them."""
    store = res.need_store()
    keys = {o.key for o in await store.list("videos/")}
    async with res.need_db().session() as session:
        rows = int((await session.execute(text("SELECT count(*) FROM videos"))).scalar_one())
    root = Path(res.settings.storage_root)
    return keys, rows, sorted(root.rglob("*.part"))


def test_raw_body_over_http1_h2c_and_h2_over_tls(
    upload: Upload, clip: Path, account: Account
) -> None:
    protocols = {
        "1.1": (["--http1.1"], f"{upload.url}/api/videos?title=one&tags=a,b"),
        "2": (["--http2-prior-knowledge"], f"{upload.url}/api/videos?title=two"),
        "2-tls": (["--http2", "--cacert", str(upload.cert)], f"{upload.tls_url}/api/videos"),
    }
    for name, (args, url) in protocols.items():
        version, status, body = curl(args, clip, url, authorization(account))
        assert status == 201, body
        assert version == name.split("-")[0]
        assert body["sha256"] == sha256_file(clip) and body["size_bytes"] == clip.stat().st_size
        assert body["state"] == "queued"
        assert body["links"]["progress"] == f"/api/videos/{body['id']}/events"
    assert body["title"] == "untitled"


async def test_browser_form_is_streamed_with_its_metadata(
    upload: Upload, clip: Path, res: Resources, account: Account
) -> None:
    async with httpx.AsyncClient(timeout=60, headers=account.headers) as client:
        response = await client.post(
            f"{upload.url}/api/videos",
            data={"title": "From a form", "description": "made in a test", "tags": "x, y"},
            files={"file": ("holiday.mp4", clip.read_bytes(), "video/mp4")},
        )
    assert response.status_code == 201, response.text
    video = response.json()
    assert response.headers["location"] == f"/api/videos/{video['id']}"
    assert (video["title"], video["filename"], video["tags"]) == (
        "From a form",
        "holiday.mp4",
        ["x", "y"],
    )
    assert video["description"] == "made in a test"
    stored = await res.need_store().get_bytes(f"videos/{video['id']}/source")
    assert hashlib.sha256(stored).hexdigest() == sha256_file(clip)


async def test_content_digest_verified(
    upload: Upload, clip: Path, res: Resources, account: Account
) -> None:
    data = clip.read_bytes()
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    async with httpx.AsyncClient(timeout=60, headers=account.headers) as client:
        ok = await client.put(
            f"{upload.url}/api/videos",
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Digest": f"sha-256=:{good}:",
            },
        )
        assert ok.status_code == 201, ok.text
        before = await snapshot(res)
        refused = await client.put(
            f"{upload.url}/api/videos",
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Digest": f"sha-256=:{bad}:",
            },
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == "digest_mismatch"
        malformed = await client.put(
            f"{upload.url}/api/videos",
            content=data,
            headers={"Content-Type": "video/mp4", "Content-Digest": "sha-256=nope"},
        )
        assert malformed.status_code == 400 and malformed.json()["error"] == "bad_request"
        wrong_type = await client.put(
            f"{upload.url}/api/videos", content=data, headers={"Content-Type": "text/plain"}
        )
        assert wrong_type.status_code == 415
        assert wrong_type.json()["error"] == "unsupported_media_type"
    assert await snapshot(res) == before


async def test_size_limit_is_enforced_while_streaming(
    test_env: dict[str, str], test_root: Path, clip: Path, res: Resources, account: Account
) -> None:
    manager = Processes(test_root / "logs" / "upload-small", test_env)
    try:
        small = start_upload(manager, test_root, UPLOAD_MAX_BYTES=str(MIB))
        before = await snapshot(res)

        for args in (["--http1.1"], ["--http2-prior-knowledge"]):
            # Read from a pipe: no Content-Length, so only the stream can tell the size.
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    "curl",
                    "-sS",
                    "-T",
                    "-",
                    "-H",
                    "Content-Type: application/octet-stream",
                    "-H",
                    authorization(account),
                    *args,
                    "-w",
                    "\n%{http_code}",
                    f"{small.url}/api/videos",
                ],
                input=b"\0" * (3 * MIB),
                capture_output=True,
                timeout=120,
            )
            body, _, code = done.stdout.decode().rpartition("\n")
            assert code == "413", done
            assert json.loads(body) == {
                "error": "payload_too_large",
                "detail": f"the upload exceeds the maximum of {MIB} bytes",
                "max_bytes": MIB,
            }
        # A declared Content-Length over the limit is refused before any byte is read; a client
        # that asks first (Expect: 100-continue, as curl does for big bodies) sends none.
        too_big = test_root / "too-big.bin"
        too_big.write_bytes(b"\0" * (MIB + 1))
        for args in (["--http1.1", "-H", "Expect: 100-continue"], ["--http2-prior-knowledge"]):
            done = await asyncio.to_thread(
                subprocess.run,
                [
                    "curl",
                    "-sS",
                    "-T",
                    str(too_big),
                    "-H",
                    "Content-Type: application/octet-stream",
                    "-H",
                    authorization(account),
                    *args,
                    "-w",
                    "\n%{http_code} %{size_upload}",
                    f"{small.url}/api/videos",
                ],
                capture_output=True,
                timeout=120,
            )
            body, _, status = done.stdout.decode().rpartition("\n")
            code, _, sent = status.partition(" ")
            assert code == "413", done
            assert json.loads(body)["max_bytes"] == MIB
            if args[0] == "--http1.1":
                assert int(sent) == 0, "the body was sent although the server refused it"
        # A client that sends it unasked gets the answer too: the server drains a small excess.
        async with httpx.AsyncClient(timeout=60, headers=account.headers) as client:
            for _ in range(5):
                unasked = await client.put(
                    f"{small.url}/api/videos",
                    content=b"\0" * (MIB + 1),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert unasked.status_code == 413
                assert unasked.json()["error"] == "payload_too_large"
        assert await snapshot(res) == before
    finally:
        manager.stop_all()


class PeakRss:
    """Samples a process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
async def test_one_gib_over_h2c_and_h2_tls_with_flat_memory(
    upload: Upload, clip: Path, test_root: Path, res: Resources, account: Account
) -> None:
    big = padded_media(clip, test_root / "one-gib.mp4", GIB, random=False)
    expected = sha256_file(big)
    try:
        for args, url in (
            (["--http2-prior-knowledge"], f"{upload.url}/api/videos"),
            (["--http2", "--cacert", str(upload.cert)], f"{upload.tls_url}/api/videos"),
        ):
            with PeakRss(upload.pid) as rss:
                version, status, body = await asyncio.to_thread(
                    curl, args, big, url, authorization(account)
                )
            assert (version, status) == ("2", 201), body
            assert body["size_bytes"] == GIB and body["sha256"] == expected
            assert rss.peak < 150 * MIB, f"peak RSS {rss.peak / MIB:.0f} MiB"
            await res.need_store().delete(f"videos/{body['id']}/source")
    finally:
        big.unlink(missing_ok=True)
