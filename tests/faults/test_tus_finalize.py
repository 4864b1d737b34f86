"""The tus service killed, or its database gone, while it turns a finished upload into a video.

``CHUNKED_UPLOAD_FAULT_STALL_AT=assembled`` holds finalizing after the parts are joined into the
source and before the probe and the commit, so the fault lands inside that window every time.
Until the video exists no HEAD says the upload is done; once the service (or its database) is
back the next HEAD, or the sweeper with nobody asking, finishes it from the bytes it kept.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import Account, create_account
from tests.support.infra import PrivatePostgres
from tests.support.media import MIB, make_clip, padded_media, sha256_file
from tests.support.polling import eventually, logged
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.upload import (
    PATCH,
    TUS,
    VIDEO_ID,
    env_store,
    part_bytes,
    source_sha256,
    tus_storage,
)


@pytest.fixture(scope="module")
def source(media_dir: Path) -> Path:
    """Valid media of a few parts on either store (S3 parts are 5 MiB)."""
    clip = make_clip(media_dir / "finalize-clip.mp4", seconds=1, size="160x90")
    return padded_media(clip, media_dir / "finalize-11m.mp4", 11 * MIB + 777)


async def _head(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.head(url, headers=TUS)


async def _start(
    client: httpx.AsyncClient, service: Proc, data: bytes, first_bytes: int
) -> tuple[str, str, asyncio.Task[httpx.Response]]:
    """Create an upload, send its first bytes, then the rest, until finalizing stalls; the URL,
    the video's id and the last PATCH."""
    created = await client.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    first = await client.patch(
        url, content=data[:first_bytes], headers={**PATCH, "Upload-Offset": "0"}
    )
    assert first.status_code == 204, first.text
    last = client.patch(
        url, content=data[first_bytes:], headers={**PATCH, "Upload-Offset": str(first_bytes)}
    )
    patched = asyncio.create_task(last)
    upload_id = url.rsplit("/", 1)[1]
    await logged(service, f"upload {upload_id}: finalizing stalls", within=30)
    return url, created.headers[VIDEO_ID], patched


async def _finished_by_head(
    client: httpx.AsyncClient, url: str, video_id: str, length: int
) -> None:
    """Poll HEAD until the upload is done, checking the video exists by then."""

    async def done() -> httpx.Response | None:
        answer = await _head(client, url)
        if answer.status_code == 423:
            return None
        assert answer.status_code == 200, answer.text
        # "Done" only once the video exists.
        assert (await client.get(f"/api/videos/{video_id}")).status_code == 200
        return answer

    answer = await eventually(done, within=30, what="a HEAD to finish the upload")
    assert answer.headers["upload-offset"] == str(length)


@pytest.mark.parametrize(
    ("backend", "finisher"), [("fs", "head"), ("fs", "sweeper"), ("s3", "head")]
)
async def test_killed_while_finalizing_the_video_appears_after_restart(
    procs: Processes,
    test_env: dict[str, str],
    queues: dict[str, str],
    source: Path,
    request: pytest.FixtureRequest,
    backend: str,
    finisher: str,
    account: Account,
) -> None:
    moto = request.getfixturevalue("moto_endpoint") if backend == "s3" else None
    env = {
        **queues,
        **tus_storage(backend, moto),
        "CHUNKED_UPLOAD_LOCK_TTL_SECONDS": "2",
        "CHUNKED_UPLOAD_SWEEP_INTERVAL_SECONDS": "0.5",
        # Only the sweeper retries in the sweeper case; only a HEAD can in the other.
        "CHUNKED_UPLOAD_FINALIZE_RETRY_SECONDS": "1" if finisher == "sweeper" else "3600",
    }
    store = env_store({**test_env, **env})
    port = free_port()
    stalled = procs.service(
        "chunked_upload", port=port, env={**env, "CHUNKED_UPLOAD_FAULT_STALL_AT": "assembled"}
    )
    data = source.read_bytes()
    async with httpx.AsyncClient(
        base_url=stalled.url, timeout=60, headers=account.headers
    ) as client:
        first_bytes = part_bytes({**test_env, **env}) + 1000
        url, video_id, last = await _start(client, stalled, data, first_bytes)

        # Every byte is stored, the source is joined, but there is no video: nobody hears "done".
        during = await _head(client, url)
        assert during.status_code == 423, during.text
        assert during.headers["retry-after"] == "1"
        assert (await client.get(f"/api/videos/{video_id}")).status_code == 404
        assert not last.done()

        stalled.kill()
        with pytest.raises(httpx.TransportError):
            await last

    procs.service("chunked_upload", port=port, env=env)
    async with httpx.AsyncClient(
        base_url=stalled.url, timeout=60, headers=account.headers
    ) as client:

        async def video() -> dict | None:
            found = await client.get(f"/api/videos/{video_id}")
            return found.json() if found.status_code == 200 else None

        if finisher == "head":
            await _finished_by_head(client, url, video_id, len(data))
        else:
            await eventually(video, within=30, what="the sweeper to finish the upload")
            answer = await _head(client, url)
            assert answer.status_code == 200 and answer.headers["upload-offset"] == str(len(data))
        made = await video()
    assert made is not None and made["state"] == "queued"
    assert made["sha256"] == sha256_file(source)  # read back: the bytes reached a dead process
    assert await source_sha256(store, video_id) == sha256_file(source)
    assert not await store.list(f"uploads/{url.rsplit('/', 1)[1]}/")
    await store.close()


async def test_a_database_outage_while_finalizing_keeps_the_bytes(
    procs: Processes,
    test_env: dict[str, str],
    queues: dict[str, str],
    source: Path,
    private_postgres: PrivatePostgres,
) -> None:
    # The service runs on a database of its own: its account is made there.
    account = create_account({"DATABASE_URL": private_postgres.url})
    env = {
        **queues,
        **tus_storage("fs"),
        "DATABASE_URL": private_postgres.url,
        "CHUNKED_UPLOAD_FAULT_STALL_AT": "assembled",
        "CHUNKED_UPLOAD_FAULT_STALL_SECONDS": "5",
        "CHUNKED_UPLOAD_FINALIZE_RETRY_SECONDS": "3600",  # only a HEAD retries
    }
    store = env_store({**test_env, **env})
    service = procs.service("chunked_upload", env=env)
    data = source.read_bytes()
    async with httpx.AsyncClient(
        base_url=service.url, timeout=60, headers=account.headers
    ) as client:
        first_bytes = part_bytes({**test_env, **env}) + 1000
        url, video_id, last = await _start(client, service, data, first_bytes)
        private_postgres.stop()  # the commit of the video is next, and fails

        answered = await last
        assert answered.status_code == 423, answered.text
        assert answered.headers["retry-after"] == "1"
        # Nothing of the upload was deleted for a failure that was not the bytes' fault.
        assert (await store.stat(f"videos/{video_id}/source")).size == len(data)

        private_postgres.start()
        await _finished_by_head(client, url, video_id, len(data))
        video = (await client.get(f"/api/videos/{video_id}")).json()
    assert video["state"] == "queued" and video["sha256"] == sha256_file(source)
    assert await source_sha256(store, video_id) == sha256_file(source)
    await store.close()
