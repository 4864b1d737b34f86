"""tus 1.0.0 on the chunked_upload service, run as a real process on both storage backends."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.chunked_upload.lock import lock_key
from shared.mq.topology import Topology
from shared.runtime.resources import Resources
from shared.storage.base import ObjectStore
from shared.storage.filesystem import FilesystemStore
from shared.storage.s3 import S3Store
from tests.support.accounts import Account
from tests.support.infra import delete_topology
from tests.support.media import MIB, make_clip, padded_media, sha256_file
from tests.support.paths import ROOT
from tests.support.polling import eventually
from tests.support.processes import Proc, Processes
from tests.support.upload import (
    PATCH,
    TUS,
    client_env,
    ensure_node_clients,
    env_store,
    source_sha256,
    tus_storage,
    video_id_of,
)


@dataclass
class Tus:
    backend: str
    url: str
    env: dict[str, str]
    store: ObjectStore
    proc: Proc
    account: Account

    @property
    def files(self) -> str:
        return f"{self.url}/files/"

    @property
    def auth(self) -> dict[str, str]:
        return self.account.headers


@pytest.fixture(scope="module", params=["fs", "s3"])
async def tus(
    request: pytest.FixtureRequest,
    test_env: dict[str, str],
    test_root: Path,
    res: Resources,
    account: Account,
) -> AsyncIterator[Tus]:
    """One chunked_upload process per backend for the module (fs parts are kept small).

    Every finished upload becomes a video whose transcode job the service publishes. It
    publishes to exchanges and queues of its own, deleted at the end: on the session's queue
    the jobs would wait for whichever test starts a worker next, and take its time.
    """
    shared = res.need_broker().topology
    topology = Topology(
        f"{shared.prefix}.tus-{request.param}-{uuid.uuid4().hex[:6]}", shared.retry_delays_seconds
    )
    env = {
        "CHUNKED_UPLOAD_SWEEP_INTERVAL_SECONDS": "0.5",
        "CHUNKED_UPLOAD_LOCK_TTL_SECONDS": "5",
        "CHUNKED_UPLOAD_MAX_BYTES": str(64 * MIB),
        "MQ_PREFIX": topology.prefix,
    }
    moto = request.getfixturevalue("moto_endpoint") if request.param == "s3" else None
    env |= tus_storage(request.param, moto)
    manager = Processes(test_root / "logs" / f"tus-{request.param}", test_env)
    try:
        proc = manager.service("chunked_upload", env=env)
        full_env = {**test_env, **env}
        yield Tus(request.param, proc.url or "", full_env, env_store(full_env), proc, account)
    finally:
        manager.stop_all()
        await delete_topology(res.need_broker().connection, topology)


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> Path:
    return make_clip(media_dir / "tus-clip.mp4", seconds=2, size="320x180")


@pytest.fixture(scope="module")
def big_media(clip: Path, media_dir: Path) -> Path:
    """About 11 MiB of valid media: three S3 parts, many small filesystem parts."""
    return padded_media(clip, media_dir / "tus-11m.mp4", 11 * MIB + 12345)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create(tus: Tus, length: int, **headers: str) -> str:
    response = httpx.post(
        tus.files, headers={**TUS, **tus.auth, "Upload-Length": str(length), **headers}
    )
    assert response.status_code == 201, response.text
    return httpx.URL(tus.files).join(response.headers["location"]).__str__()


def request(
    tus: Tus, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: object
) -> httpx.Response:
    """A request as the module's account."""
    return httpx.request(
        method,
        url,
        headers={**tus.auth, **(headers or {})},
        timeout=60,
        **kwargs,  # type: ignore[arg-type]
    )


def head(tus: Tus, url: str) -> httpx.Response:
    return httpx.head(url, headers={**TUS, **tus.auth})


def patch(tus: Tus, url: str, offset: int, data: bytes, **headers: str) -> httpx.Response:
    return httpx.patch(
        url,
        content=data,
        headers={**PATCH, **tus.auth, "Upload-Offset": str(offset), **headers},
        timeout=60,
    )


async def leftovers(tus: Tus, *ids: str) -> list[str]:
    """Objects and unfinished multipart uploads an upload (its id, its video's) still holds."""
    found: list[str] = []
    for upload_id in ids:
        found += [o.key for o in await tus.store.list(f"uploads/{upload_id}/")]
        if isinstance(tus.store, S3Store):
            result = tus.store._client._list_multipart_uploads(tus.store.bucket)
            found += [u.object_name for u in result.uploads if upload_id in u.object_name]
        else:
            assert isinstance(tus.store, FilesystemStore)
            for folder in (tus.store.root / ".multipart").glob("*"):
                key_file = folder / "key"
                if key_file.exists() and upload_id in key_file.read_text():
                    found.append(str(folder))
    return found


def run_client(tus: Tus, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A tus client process uploading as the module's account."""
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=client_env(tus.account),
    )


def lines(output: str, word: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith(word + " ")]


def test_options_advertises_the_extensions(tus: Tus) -> None:
    response = httpx.options(tus.files)
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert response.headers["tus-resumable"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    }
    assert response.headers["tus-checksum-algorithm"] == "sha1,sha256,md5"
    assert int(response.headers["tus-max-size"]) == 64 * MIB


def test_browsers_on_other_sites_may_upload(tus: Tus, clip: Path) -> None:
    site = {"Origin": "https://studio.example"}
    preflight = httpx.options(
        tus.files,
        headers={
            **site,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable, upload-offset, content-type",
        },
    )
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"tus-resumable", "upload-offset", "content-type"} <= set(allowed.split(", "))
    # The answer a browser reads after creating an upload names what it may see of it.
    data = clip.read_bytes()
    created = httpx.post(
        tus.files, headers={**TUS, **tus.auth, **site, "Upload-Length": str(len(data))}
    )
    assert created.status_code == 201, created.text
    exposed = created.headers["access-control-expose-headers"].lower().split(", ")
    assert {"location", "upload-offset", "tus-resumable", "upload-expires", "video-id"} <= set(
        exposed
    )
    url = httpx.URL(tus.files).join(created.headers["location"]).__str__()
    request(tus, "DELETE", url, headers=TUS)


async def test_tuspy_killed_then_resumed_is_byte_exact(
    tus: Tus, big_media: Path, tmp_path: Path
) -> None:
    store = tmp_path / "tuspy-urls.json"
    cmd = [
        sys.executable,
        "-m",
        "tests.support.upload",
        tus.files,
        str(big_media),
        str(store),
        "--chunk",
        str(3 * MIB + 17),
    ]
    first = run_client(tus, [*cmd, "--die-after", str(4 * MIB)])
    assert first.returncode == -9, first.stderr  # killed by SIGKILL mid-upload
    assert "done" not in first.stdout
    reached = int(lines(first.stdout, "offset")[-1])

    second = run_client(tus, cmd)
    assert second.returncode == 0, second.stderr
    start_offset = int(lines(second.stdout, "start")[0].split()[0])
    assert start_offset == reached > 0  # resumed at the server's offset, not from zero
    url = lines(second.stdout, "done")[0]
    upload_id, video_id = url.rstrip("/").rsplit("/", 1)[1], video_id_of(url, tus.account)
    assert upload_id != video_id
    assert await source_sha256(tus.store, video_id) == sha256_file(big_media)
    video = request(tus, "GET", f"{tus.url}/api/videos/{video_id}").json()
    assert video["state"] == "queued" and video["sha256"] == sha256_file(big_media)
    assert video["title"] == "tuspy upload" and video["filename"] == big_media.name
    assert video["owner_id"] == str(tus.account.user_id)
    assert await leftovers(tus, upload_id, video_id) == []
    # Every byte reached this one process: its sha-256 was kept as the bytes were stored.
    assert f"upload {upload_id}: sha-256 read back" not in tus.proc.log()


async def test_tus_js_client_killed_then_resumed_is_byte_exact(
    tus: Tus, big_media: Path, tmp_path: Path
) -> None:
    node_dir = ensure_node_clients()
    store = tmp_path / "tus-js-urls.json"
    cmd = [
        "node",
        str(node_dir / "tus_upload.js"),
        tus.files,
        str(big_media),
        str(store),
        "--chunk",
        str(2 * MIB + 5),
    ]
    first = run_client(tus, [*cmd, "--die-after", str(4 * MIB)])
    assert first.returncode == -9, first.stdout + first.stderr
    reached = int(lines(first.stdout, "offset")[-1])
    url = lines(first.stdout, "url")[0]
    assert int(head(tus, url).headers["upload-offset"]) == reached

    second = run_client(tus, cmd)
    assert second.returncode == 0, second.stdout + second.stderr
    assert lines(second.stdout, "resuming")[0] == url
    assert int(lines(second.stdout, "offset")[0]) > reached  # continued, did not restart
    video_id = video_id_of(lines(second.stdout, "done")[0], tus.account)
    assert await source_sha256(tus.store, video_id) == sha256_file(big_media)


async def test_four_parallel_partial_uploads_concatenate_byte_exact(
    tus: Tus, big_media: Path, tmp_path: Path, res: Resources
) -> None:
    node_dir = ensure_node_clients()
    done = run_client(
        tus,
        [
            "node",
            str(node_dir / "tus_upload.js"),
            tus.files,
            str(big_media),
            str(tmp_path / "urls.json"),
            "--parallel",
            "4",
        ],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    final_url = lines(done.stdout, "done")[0]
    final = head(tus, final_url)
    assert final.headers["upload-concat"].startswith("final;")
    partial_urls = final.headers["upload-concat"][len("final;") :].split()
    assert len(partial_urls) == 4
    assert int(final.headers["upload-offset"]) == big_media.stat().st_size
    video_id = video_id_of(final_url, tus.account)
    assert await source_sha256(tus.store, video_id) == sha256_file(big_media)
    # The partial uploads were consumed: their rows and bytes are gone.
    for partial in partial_urls:
        assert head(tus, f"{tus.url}{partial}").status_code == 404
        assert await leftovers(tus, partial.rsplit("/", 1)[1]) == []


def test_creation_with_upload_and_deferred_length(tus: Tus, clip: Path) -> None:
    data = clip.read_bytes()
    first = httpx.post(
        tus.files,
        content=data[:1000],
        headers={
            **PATCH,
            **tus.auth,
            "Upload-Defer-Length": "1",
            "Upload-Metadata": f"filename {b64(b'deferred.mp4')},tags {b64(b'demo')}",
        },
    )
    assert first.status_code == 201, first.text
    assert first.headers["upload-offset"] == "1000"
    url = httpx.URL(tus.files).join(first.headers["location"]).__str__()
    state = head(tus, url)
    assert state.headers["upload-defer-length"] == "1"
    assert "upload-length" not in state.headers
    assert "filename ZGVmZXJyZWQubXA0" in state.headers["upload-metadata"].split(",")

    done = patch(tus, url, 1000, data[1000:], **{"Upload-Length": str(len(data))})
    assert done.status_code == 204, done.text
    assert done.headers["upload-offset"] == str(len(data))
    video = httpx.get(f"{tus.url}/api/videos/{video_id_of(url, tus.account)}").json()
    assert video["filename"] == "deferred.mp4" and video["tags"] == ["demo"]


def test_checksum_mismatch_is_460_and_the_offset_stays(tus: Tus, clip: Path) -> None:
    data = clip.read_bytes()
    url = create(tus, len(data))
    good = patch(
        tus,
        url,
        0,
        data[:5000],
        **{
            "Upload-Checksum": "sha1 "
            + base64.b64encode(hashlib.sha1(data[:5000]).digest()).decode()
        },
    )
    assert good.status_code == 204 and good.headers["upload-offset"] == "5000"
    for algorithm in ("sha1", "sha256", "md5"):
        wrong = base64.b64encode(hashlib.new(algorithm, b"other bytes").digest()).decode()
        bad = patch(tus, url, 5000, data[5000:9000], **{"Upload-Checksum": f"{algorithm} {wrong}"})
        assert bad.status_code == 460, bad.text
        assert bad.json()["error"] == "checksum_mismatch"
        assert head(tus, url).headers["upload-offset"] == "5000"
    unknown = patch(tus, url, 5000, data[5000:9000], **{"Upload-Checksum": "crc32 AAAAAA=="})
    assert unknown.status_code == 400
    right = "md5 " + base64.b64encode(hashlib.md5(data[5000:]).digest()).decode()
    assert patch(tus, url, 5000, data[5000:], **{"Upload-Checksum": right}).status_code == 204


async def test_protocol_errors(tus: Tus, clip: Path, res: Resources) -> None:
    data = clip.read_bytes()
    url = create(tus, len(data))
    assert patch(tus, url, 0, data[:100]).status_code == 204

    conflict = patch(tus, url, 50, data[50:200])
    assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
    assert conflict.headers["upload-offset"] == "100"
    wrong_type = request(
        tus,
        "PATCH",
        url,
        content=data[100:200],
        headers={**TUS, "Upload-Offset": "100", "Content-Type": "application/octet-stream"},
    )
    assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_media_type"
    too_big = request(tus, "POST", tus.files, headers={**TUS, "Upload-Length": str(64 * MIB + 1)})
    assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
    past_end = patch(tus, url, 100, data[100:] + b"extra bytes")
    assert past_end.status_code == 413
    missing = f"{tus.files}{uuid.uuid4()}"
    assert head(tus, missing).status_code == 404
    assert patch(tus, missing, 0, b"x").status_code == 404
    no_version = request(
        tus,
        "PATCH",
        url,
        content=b"x",
        headers={"Content-Type": "application/offset+octet-stream", "Upload-Offset": "100"},
    )
    assert no_version.status_code == 412 and no_version.headers["tus-version"] == "1.0.0"
    assert head(tus, url).headers["upload-offset"] == "100"

    # Termination removes the upload and what it stored.
    video_id = video_id_of(url, tus.account)
    assert request(tus, "DELETE", url, headers=TUS).status_code == 204
    assert head(tus, url).status_code == 404
    assert await leftovers(tus, url.rsplit("/", 1)[1], video_id) == []


async def test_expired_upload_is_gone_and_its_parts_swept(
    tus: Tus, big_media: Path, res: Resources
) -> None:
    data = big_media.read_bytes()[: 6 * MIB + 999]  # one S3 part plus a stored tail
    url = create(tus, len(data) + 10)
    upload_id, video_id = url.rsplit("/", 1)[1], video_id_of(url, tus.account)
    assert patch(tus, url, 0, data).status_code == 204
    assert head(tus, url).headers["upload-expires"].endswith("GMT")
    assert await leftovers(tus, upload_id, video_id)  # parts and tail exist
    async with res.need_db().session() as session:  # the clock moves past the expiry
        await session.execute(
            text("UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": upload_id},
        )
    assert head(tus, url).status_code in (404, 410)
    assert patch(tus, url, len(data), b"0123456789").status_code in (404, 410)
    deadline = time.monotonic() + 20
    while head(tus, url).status_code != 404:
        assert time.monotonic() < deadline, "the sweeper did not remove the expired upload"
        await asyncio.sleep(0.2)
    assert await leftovers(tus, upload_id, video_id) == []


async def test_concurrent_patch_is_refused_and_never_corrupts(
    tus: Tus, clip: Path, res: Resources
) -> None:
    data = clip.read_bytes()
    url = create(tus, len(data))
    upload_id = uuid.UUID(url.rsplit("/", 1)[1])
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield data[:1000]
        await release.wait()
        yield data[1000:]

    async def locked() -> bool:
        return bool(await res.need_redis().exists(lock_key(upload_id)))

    async with httpx.AsyncClient(timeout=30) as client:
        first = asyncio.create_task(
            client.patch(
                url, content=slow_body(), headers={**PATCH, **tus.auth, "Upload-Offset": "0"}
            )
        )
        # The body is under way once the server has taken the upload's lock for it.
        await eventually(locked, within=15, what="the first PATCH to take the upload's lock")
        second = await client.patch(
            url, content=b"garbage" * 100, headers={**PATCH, **tus.auth, "Upload-Offset": "0"}
        )
        assert second.status_code == 423, second.text
        assert second.json()["error"] == "locked"
        release.set()
        assert (await first).status_code == 204
    video_id = video_id_of(url, tus.account)
    assert await source_sha256(tus.store, video_id) == hashlib.sha256(data).hexdigest()


async def test_not_media_is_rejected_and_leaves_nothing(tus: Tus, res: Resources) -> None:
    junk = os.urandom(200_000)
    url = create(tus, len(junk))
    upload_id, video_id = url.rsplit("/", 1)[1], video_id_of(url, tus.account)
    assert patch(tus, url, 0, junk[:150_000]).status_code == 204
    last = patch(tus, url, 150_000, junk[150_000:])
    assert last.status_code == 400 and last.json()["error"] == "not_media"
    # The upload is failed for good: its bytes are gone and it says so until it expires.
    assert head(tus, url).status_code == 410
    refused = patch(tus, url, 200_000, b"")
    assert refused.status_code == 410 and "refused" in refused.json()["detail"]
    assert await leftovers(tus, upload_id, video_id) == []
    assert not await tus.store.exists(f"videos/{video_id}/source")
    async with res.need_db().session() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM videos WHERE id = :id),"
                    " (SELECT count(*) FROM transcode_jobs WHERE video_id = :id)"
                ),
                {"id": video_id},
            )
        ).one()
    assert tuple(rows) == (0, 0)
