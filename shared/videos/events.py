"""Server-sent events of one video's upload and transcode progress, from Redis pub/sub.

A private video's events go to its owner and admins only (404 to anyone else, as for the video
itself); while an upload is still arriving there is no row to say whose it is, and the stream
shows only its byte counts, under an id nobody else was told.

Every stream of a process listens through the process's one subscriber (``Resources.pubsub``).
A stream that falls behind by a whole queue ends (the browser's EventSource reconnects and
starts from a fresh snapshot); after Redis comes back from an outage, each stream sends a fresh
snapshot, since what was published meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from shared.core.errors import NotFound
from shared.db.repositories import VideoRepository
from shared.http.auth import Principal
from shared.http.concurrency import Cap
from shared.runtime.pubsub import Dropped, Listener, PubSubHub, Signal
from shared.runtime.resources import Resources
from shared.videos import progress
from shared.videos.access import may_view

TERMINAL_STAGES = frozenset({"ready", "failed", "rejected"})


def events_cap(limit: int) -> Cap:
    """The per-process cap on open event streams (``EVENTS_MAX_STREAMS``)."""
    return Cap("events", frozenset({"GET"}), r"/api/videos/[^/]+/events", limit)


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _snapshot(
    res: Resources, video_id: uuid.UUID, viewer: Principal | None
) -> dict[str, Any]:
    live = await progress.latest(res.need_redis(), video_id)
    async with res.need_db().session() as session:
        video = await VideoRepository(session).find(video_id)
    if video is not None and not may_view(video, viewer):
        raise NotFound(f"video {video_id} does not exist")
    if video is None or video.state == "deleted":
        if not live:
            raise NotFound(f"video {video_id} does not exist")
        return {"video_id": str(video_id), "state": "uploading", **live}
    snapshot = {"video_id": str(video_id), **live, "state": video.state}
    if video.state in TERMINAL_STAGES:
        snapshot["stage"] = video.state  # the row is the truth once the video is done
    return snapshot


async def open_video_events(
    res: Resources,
    video_id: uuid.UUID,
    viewer: Principal | None,
    *,
    keepalive_seconds: float = 15,
) -> AsyncIterator[bytes]:
    """Subscribe, then check the video exists and ``viewer`` may see it (NotFound before any
    byte is sent)."""
    hub = res.need_pubsub()
    # Confirmed by Redis before the snapshot is read: no update falls between the two.
    listener = await hub.subscribe(progress.channel(video_id))
    try:
        snapshot = await _snapshot(res, video_id, viewer)
    except BaseException:
        hub.unsubscribe(listener)
        raise
    return _stream(res, hub, listener, snapshot, viewer, keepalive_seconds)


async def _next_update(
    res: Resources,
    listener: Listener,
    video_id: uuid.UUID,
    viewer: Principal | None,
    keepalive_seconds: float,
) -> dict[str, Any] | None:
    """The next state to send; None after ``keepalive_seconds`` of silence."""
    try:
        async with asyncio.timeout(keepalive_seconds):
            item = await listener.get()
    except TimeoutError:
        return None
    if isinstance(item, Signal):  # RESYNC: Redis came back, updates may have been lost
        return await _snapshot(res, video_id, viewer)
    data: dict[str, Any] = json.loads(item)
    return data


async def _stream(
    res: Resources,
    hub: PubSubHub,
    listener: Listener,
    snapshot: dict[str, Any],
    viewer: Principal | None,
    keepalive_seconds: float,
) -> AsyncIterator[bytes]:
    video_id = uuid.UUID(snapshot["video_id"])
    data: dict[str, Any] | None = snapshot
    try:
        while True:
            if data is None:
                yield b": keep-alive\n\n"
            elif data.get("stage") in TERMINAL_STAGES:
                yield sse("end", data)
                return
            else:
                yield sse("progress", data)
            data = await _next_update(res, listener, video_id, viewer, keepalive_seconds)
    except (Dropped, NotFound):
        return  # fell behind, or the video went away: the client starts again if it wants
    finally:
        hub.unsubscribe(listener)
