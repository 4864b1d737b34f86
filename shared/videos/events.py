"""Server-sent events of one video's upload and transcode progress, from Redis pub/sub."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio.client import PubSub

from shared.core.errors import NotFound
from shared.db.repositories import VideoRepository
from shared.runtime.resources import Resources
from shared.videos import progress

TERMINAL_STAGES = frozenset({"ready", "failed", "rejected"})


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _snapshot(res: Resources, video_id: uuid.UUID) -> dict[str, Any]:
    live = await progress.latest(res.need_redis(), video_id)
    async with res.need_db().session() as session:
        video = await VideoRepository(session).find(video_id)
    if video is None or video.state == "deleted":
        if not live:
            raise NotFound(f"video {video_id} does not exist")
        return {"video_id": str(video_id), "state": "uploading", **live}
    snapshot = {"video_id": str(video_id), **live, "state": video.state}
    if video.state in TERMINAL_STAGES:
        snapshot["stage"] = video.state  # the row is the truth once the video is done
    return snapshot


async def open_video_events(
    res: Resources, video_id: uuid.UUID, *, keepalive_seconds: float = 15
) -> AsyncIterator[bytes]:
    """Subscribe, then check the video exists (NotFound before any byte is sent)."""
    pubsub = res.need_redis().pubsub()
    # Subscribing before reading the snapshot means no update falls between the two.
    await pubsub.subscribe(progress.channel(video_id))
    try:
        snapshot = await _snapshot(res, video_id)
    except BaseException:
        await _close(pubsub, video_id)
        raise
    return _stream(pubsub, video_id, snapshot, keepalive_seconds)


async def _close(pubsub: PubSub, video_id: uuid.UUID) -> None:
    with contextlib.suppress(Exception):
        await pubsub.unsubscribe(progress.channel(video_id))
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _stream(
    pubsub: PubSub, video_id: uuid.UUID, snapshot: dict[str, Any], keepalive_seconds: float
) -> AsyncIterator[bytes]:
    try:
        if snapshot.get("stage") in TERMINAL_STAGES:
            yield sse("end", snapshot)
            return
        yield sse("progress", snapshot)
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=keepalive_seconds
            )
            if message is None:
                yield b": keep-alive\n\n"
                continue
            if message.get("type") != "message":
                continue
            data = json.loads(message["data"])
            if data.get("stage") in TERMINAL_STAGES:
                yield sse("end", data)
                return
            yield sse("progress", data)
    finally:
        await _close(pubsub, video_id)
