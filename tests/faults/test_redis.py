"""Redis restarted or down under a running upload service: uploads go on, event streams resume.

Each test runs its own redis-server (``PrivateRedis``), so killing it disturbs nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from shared.db.models import Video, VideoState
from shared.runtime.resources import Resources
from shared.videos import progress
from tests.support.accounts import Account
from tests.support.infra import PrivateRedis
from tests.support.media import make_clip
from tests.support.polling import eventually
from tests.support.upload import OwnService, own_service

STREAMS_PER_VIDEO = 4
VIDEOS = 5


@pytest.fixture
def upload(
    private_redis: PrivateRedis, test_env: dict[str, str], test_root: Path
) -> Iterator[OwnService]:
    logs = test_root / "logs" / f"redis-faults-{uuid.uuid4().hex[:6]}"
    with own_service("upload", test_env, logs, REDIS_URL=private_redis.url) as service:
        yield service


def _post(url: str, data: bytes, account: Account) -> httpx.Response:
    return httpx.post(
        f"{url}/api/videos",
        content=data,
        headers={**account.headers, "Content-Type": "video/mp4"},
        timeout=60,
    )


def test_the_next_upload_after_a_redis_restart_succeeds_and_an_outage_is_a_503(
    upload: OwnService, private_redis: PrivateRedis, media_dir: Path, account: Account
) -> None:
    data = make_clip(media_dir / "redis-restart.mp4", seconds=1, size="160x90").read_bytes()
    assert _post(upload.url, data, account).status_code == 201

    # The service's pooled connections all die with the server; none is used until the upload.
    private_redis.restart()
    after = _post(upload.url, data, account)
    assert after.status_code == 201, after.text
    video = httpx.get(f"{upload.url}{after.headers['location']}", timeout=10)
    assert video.status_code == 200 and video.json()["state"] == "queued"

    private_redis.kill()
    ready = httpx.get(f"{upload.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "down"
    assert ready.json()["checks"]["database"] == "ok"
    assert httpx.get(f"{upload.url}/healthz", timeout=10).status_code == 200  # liveness holds
    refused = _post(upload.url, data, account)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "service_unavailable" and refused.headers["retry-after"]

    private_redis.start()
    assert httpx.get(f"{upload.url}/readyz", timeout=10).status_code == 200
    assert _post(upload.url, data, account).status_code == 201


class Stream:
    """One server-sent-events stream, read in the background into ``events``."""

    def __init__(self, client: httpx.AsyncClient, video_id: uuid.UUID) -> None:
        self.video_id = video_id
        self.events: list[tuple[str, dict[str, object]]] = []
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", f"/api/videos/{self.video_id}/events") as response:
            assert response.status_code == 200, await response.aread()
            name = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.append((name, json.loads(line.removeprefix("data: "))))

    def ended(self) -> bool:
        return self.task.done()


async def _all(streams: list[Stream], what: str, check: Callable[[Stream], bool]) -> None:
    async def done() -> bool:
        return all(check(s) for s in streams)

    await eventually(done, within=30, what=what)


def _subscribers(server: PrivateRedis) -> list[dict[str, str]]:
    return [c for c in server.clients() if int(c.get("sub", 0)) > 0]


@contextlib.asynccontextmanager
async def _streams(url: str, video_ids: list[uuid.UUID]) -> AsyncIterator[list[Stream]]:
    limits = httpx.Limits(max_connections=len(video_ids) * STREAMS_PER_VIDEO)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        streams = [Stream(client, v) for v in video_ids for _ in range(STREAMS_PER_VIDEO)]
        try:
            yield streams
        finally:
            for stream in streams:
                stream.task.cancel()
            await asyncio.gather(*(s.task for s in streams), return_exceptions=True)


async def test_one_subscriber_serves_every_event_stream_and_resumes_after_a_restart(
    upload: OwnService, private_redis: PrivateRedis, res: Resources
) -> None:
    video_ids = [uuid.uuid4() for _ in range(VIDEOS)]
    async with res.need_db().session() as session:
        for video_id in video_ids:
            session.add(Video(id=video_id, title="events", state=VideoState.transcoding.value))
    publisher = Redis.from_url(private_redis.url)
    try:
        async with _streams(upload.url, video_ids) as streams:
            await _all(streams, "every snapshot", lambda s: len(s.events) >= 1)
            # 20 streams, 5 channels, one connection subscribed to them all.
            [subscriber] = _subscribers(private_redis)
            assert int(subscriber["sub"]) == VIDEOS

            for video_id in video_ids:
                await progress.publish(publisher, video_id, stage="transcoding", percent=50.0)
            await _all(streams, "the published update", lambda s: len(s.events) >= 2)
            for stream in streams:
                assert stream.events[1][1] == {
                    "video_id": str(stream.video_id),
                    "stage": "transcoding",
                    "percent": 50.0,
                }

            # What is published while Redis is away is lost: each stream sends a fresh snapshot.
            private_redis.restart()
            await publisher.connection_pool.disconnect()
            await _all(streams, "a fresh snapshot", lambda s: len(s.events) >= 3)
            for stream in streams:
                name, snapshot = stream.events[2]
                assert name == "progress" and snapshot["state"] == "transcoding"
                assert "percent" not in snapshot  # read afresh: the restarted Redis holds none
            [subscriber] = _subscribers(private_redis)
            assert int(subscriber["sub"]) == VIDEOS

            for video_id in video_ids:
                await progress.publish(publisher, video_id, stage="ready", percent=100.0)
            await _all(streams, "every stream to end", Stream.ended)
            for stream in streams:
                assert stream.task.exception() is None
                assert stream.events[-1][0] == "end" and len(stream.events) == 4

        async def unsubscribed() -> bool:
            return not _subscribers(private_redis)

        await eventually(unsubscribed, within=15, what="the last stream to unsubscribe")
    finally:
        await publisher.aclose()
