"""Pieces more than one service wires in."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import StreamingResponse

from shared.db.models import Video
from shared.http.app import Hook, resources
from shared.http.auth import OptionalPrincipal
from shared.mq.outbox import OutboxRelay
from shared.runtime.resources import Resources
from shared.videos import progress
from shared.videos.access import visible_video
from shared.videos.events import open_video_events


def outbox_hooks() -> tuple[Hook, Hook]:
    """Startup and shutdown hooks running the outbox relay in a service that queues jobs."""

    async def start(_: FastAPI, res: Resources) -> None:
        relay = OutboxRelay(
            res.need_db(),
            res.need_broker(),
            retention_seconds=res.settings.outbox_retention_seconds,
        )
        res.outbox = relay
        relay.start()
        relay.kick()

    async def stop(_: FastAPI, res: Resources) -> None:
        relay = res.outbox
        if relay is not None:
            await relay.stop()

    return start, stop


def video_view(video: Video, live: dict[str, Any]) -> dict[str, Any]:
    """The public JSON shape of a video, with its latest progress."""
    return {
        "id": str(video.id),
        "state": video.state,
        "error": video.error,
        "title": video.title,
        "description": video.description,
        "tags": list(video.tags or []),
        "privacy": video.privacy,
        "owner_id": str(video.owner_id) if video.owner_id else None,
        "filename": video.filename,
        "size_bytes": video.source_size,
        "sha256": video.source_sha256,
        "duration_seconds": video.duration_seconds,
        "width": video.width,
        "height": video.height,
        "has_video": video.has_video,
        "has_audio": video.has_audio,
        "created_at": video.created_at.isoformat() if video.created_at else None,
        "ready_at": video.ready_at.isoformat() if video.ready_at else None,
        "progress": live,
        "renditions": [
            {
                "name": r.name,
                "kind": r.kind,
                "width": r.width,
                "height": r.height,
                "bandwidth": r.bandwidth,
                "average_bandwidth": r.average_bandwidth,
                "codecs": r.codecs,
                "frame_rate": r.frame_rate,
            }
            for r in video.renditions
        ],
    }


video_router = APIRouter(tags=["videos"])


@video_router.get("/api/videos/{video_id}")
async def get_video(
    video_id: uuid.UUID, res: Annotated[Resources, Depends(resources)], viewer: OptionalPrincipal
) -> dict[str, Any]:
    """A video's state, metadata, renditions and latest progress (private: its owner only)."""
    async with res.need_db().session() as session:
        video = await visible_video(session, video_id, viewer)
    live = await progress.latest(res.need_redis(), video_id) if res.redis else {}
    return video_view(video, live)


@video_router.get("/api/videos/{video_id}/events")
async def video_events(
    video_id: uuid.UUID, res: Annotated[Resources, Depends(resources)], viewer: OptionalPrincipal
) -> StreamingResponse:
    """Upload and transcode progress as server-sent events, until ready, failed or rejected
    (private: its owner only)."""
    stream = await open_video_events(res, video_id, viewer)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
