"""Two writers of one upload across a lost lock: the stale one is refused, nothing is corrupted.

Two replicas of the tus service share the database, Redis and the store. Writer 1 PATCHes
through replica A, which commits a first part and then freezes (SIGSTOP, as a stalled VM or a
long pause would) until its lock expires. Writer 2 takes the upload over through replica B from
the committed offset. Then A wakes up and writer 1 sends different bytes: before fencing, its
next part reused a part number writer 2 had committed, replacing it on S3 and unlinking it on
the filesystem. Now writer 1 hears 409 and the upload ends byte-exact.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.chunked_upload.lock import lock_key
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.media import make_clip, padded_media, sha256_file
from tests.support.polling import eventually
from tests.support.processes import Processes
from tests.support.upload import (
    PATCH,
    TUS,
    VIDEO_ID,
    env_store,
    part_bytes,
    source_sha256,
    tus_storage,
)


@pytest.mark.parametrize("backend", ["fs", "s3"])
async def test_a_writer_that_lost_its_lock_cannot_corrupt_the_upload(
    procs: Processes,
    test_env: dict[str, str],
    queues: dict[str, str],
    media_dir: Path,
    res: Resources,
    request: pytest.FixtureRequest,
    backend: str,
    account: Account,
) -> None:
    moto = request.getfixturevalue("moto_endpoint") if backend == "s3" else None
    env = {**queues, **tus_storage(backend, moto), "CHUNKED_UPLOAD_LOCK_TTL_SECONDS": "1"}
    part = part_bytes({**test_env, **env})
    clip = make_clip(media_dir / "fencing-clip.mp4", seconds=1, size="160x90")
    source = padded_media(clip, media_dir / f"fencing-{backend}.mp4", 3 * part + 4321)
    data = source.read_bytes()
    replica_a = procs.service("chunked_upload", env=env, wait=False)
    replica_b = procs.service("chunked_upload", env=env, wait=False)
    procs.wait_ready([replica_a, replica_b])
    store = env_store({**test_env, **env})

    async with (
        httpx.AsyncClient(base_url=replica_a.url, timeout=60, headers=account.headers) as one,
        httpx.AsyncClient(base_url=replica_b.url, timeout=60, headers=account.headers) as two,
    ):
        created = await one.post("/files/", headers={**TUS, "Upload-Length": str(len(data))})
        assert created.status_code == 201, created.text
        path = created.headers["location"]
        upload_id = uuid.UUID(path.rsplit("/", 1)[1])
        video_id = created.headers[VIDEO_ID]

        async def offset() -> int:
            answer = await two.head(path, headers=TUS)
            assert answer.status_code == 200, answer.text
            return int(answer.headers["upload-offset"])

        go_on = asyncio.Event()

        async def writer_one_body() -> AsyncIterator[bytes]:
            yield data[: 2 * part - 1000]  # one part committed, most of the next buffered
            await go_on.wait()
            # Not the file's bytes, and enough to fill writer 1's next part.
            yield os.urandom(2000)

        first = asyncio.create_task(
            one.patch(path, content=writer_one_body(), headers={**PATCH, "Upload-Offset": "0"})
        )

        async def first_part_committed() -> bool:
            return await offset() >= part

        await eventually(first_part_committed, within=30, what="writer 1's first part")
        replica_a.pause()
        try:

            async def lock_expired() -> bool:
                return not await res.need_redis().exists(lock_key(upload_id))

            await eventually(lock_expired, within=15, what="writer 1's lock to expire")
            committed = await offset()
            assert committed == part
            second = await two.patch(
                path,
                content=data[committed : committed + 2 * part],
                headers={**PATCH, "Upload-Offset": str(committed)},
            )
            assert second.status_code == 204, second.text
        finally:
            replica_a.resume()
        go_on.set()
        stale = await first
        assert stale.status_code == 409, stale.text

        committed = await offset()
        assert committed == 3 * part
        last = await two.patch(
            path, content=data[committed:], headers={**PATCH, "Upload-Offset": str(committed)}
        )
        assert last.status_code == 204, last.text
        assert last.headers["upload-offset"] == str(len(data))
        video = (await two.get(f"/api/videos/{video_id}")).json()
    assert video["state"] == "queued" and video["sha256"] == sha256_file(source)
    assert await source_sha256(store, video_id) == sha256_file(source)
    assert not await store.list(f"uploads/{upload_id}/")  # no tail of either writer is left
    await store.close()
