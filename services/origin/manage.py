"""Managing a video's ladder: transcode it again, and follow its latest transcode job.

A re-transcode is a new run queued through the outbox, as an upload queues the first one. A
ready video keeps serving its ready run until the new one is complete (the worker then switches
the row to it and deletes the old run after a grace); a failed video goes back to queued and is
exposed as its run goes, as a first upload is.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter

from services.origin.routes import Manager, Res
from shared.core.errors import Conflict
from shared.db.models import TranscodeJobRow, VideoState
from shared.db.repositories import VideoRepository
from shared.http.auth import Principal
from shared.http.openapi import error_responses
from shared.mq.outbox import (
    add_job,
    latest_job,
    new_transcode_job,
    pending_transcode,
    relay_pending,
)
from shared.runtime.resources import Resources
from shared.videos import progress
from shared.videos.access import managed, visible_video

log = logging.getLogger(__name__)

# States a new run may start from: a ready video is replaced, a failed one tried again.
RESTARTABLE = (VideoState.ready.value, VideoState.failed.value)


def job_view(row: TranscodeJobRow) -> dict[str, Any]:
    """The public JSON shape of a transcode job's record."""

    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "job_id": str(row.id),
        "video_id": str(row.video_id),
        "retranscode": bool(row.payload.get("retranscode")),
        "outcome": row.outcome,
        "error": row.error,
        "attempts": row.attempts,
        "created_at": at(row.created_at),
        "started_at": at(row.started_at),
        "finished_at": at(row.finished_at),
    }


async def queue_transcode(res: Resources, video_id: uuid.UUID, actor: Principal) -> dict[str, Any]:
    """Queue a new run of the video (its owner or an admin); Conflict while one is queued or
    running, or when the video has no stored source."""
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        managed(await visible_video(session, video_id, actor), actor)
        # Locked: two requests at once queue one run, the other sees it.
        video = await repo.get(video_id, for_update=True)
        if video.state not in RESTARTABLE:
            raise Conflict(
                f"video {video_id} is {video.state}: its transcode is under way",
                state=video.state,
            )
        pending = await pending_transcode(session, video_id)
        if pending is not None:
            raise Conflict(
                f"a transcode of video {video_id} is queued or running",
                state=video.state,
                job_id=str(pending.id),
            )
        if not video.source_key or not await res.need_store().exists(video.source_key):
            raise Conflict(f"video {video_id} has no stored source to transcode", state=video.state)
        replacing = video.state == VideoState.ready.value
        if not replacing:
            await repo.transition(video, VideoState.queued)
        job = new_transcode_job(video_id, video.source_key, retranscode=replacing)
        add_job(session, job)
        state = video.state
    if res.redis is not None and not replacing:
        await progress.publish(res.redis, video_id, stage=state, error=None)
    try:
        await relay_pending(res.need_db(), res.need_broker(), job_ids=[job.job_id])
    except Exception as exc:
        # The row is committed: the upload services' relays sweep it up.
        log.warning("job %s stays in the outbox for a relay: %s", job.job_id, exc)
    log.info("video %s: transcode %s queued by %s", video_id, job.job_id, actor.name)
    return {"job_id": str(job.job_id), "video_id": str(video_id), "state": state}


async def latest_transcode(res: Resources, video_id: uuid.UUID, actor: Principal) -> dict[str, Any]:
    """The video's most recent transcode job (its owner or an admin); ``job`` is None when the
    record is gone (kept for the outbox retention)."""
    async with res.need_db().session() as session:
        video = managed(await visible_video(session, video_id, actor), actor)
        pending = await pending_transcode(session, video_id)
        row = pending or await latest_job(session, video_id)
    return {
        "video_id": str(video.id),
        "state": video.state,
        "error": video.error,
        "running": pending is not None,
        "job": job_view(row) if row is not None else None,
    }


def router() -> APIRouter:
    """``/api/videos/{id}/transcode``: queue a new run, or read the latest one."""
    routes = APIRouter(tags=["catalog"])

    # 409: a transcode is queued or running, or there is no source to transcode.
    @routes.post(
        "/api/videos/{video_id}/transcode",
        status_code=202,
        responses=error_responses(403, 404, 409),
    )
    async def transcode(video_id: uuid.UUID, res: Res, actor: Manager) -> dict[str, Any]:
        """Transcode the video again (its owner or an admin). A ready video keeps playing its
        current ladder until the new one is complete; a failed one is queued again."""
        return await queue_transcode(res, video_id, actor)

    @routes.get("/api/videos/{video_id}/transcode", responses=error_responses(403, 404))
    async def transcode_status(video_id: uuid.UUID, res: Res, actor: Manager) -> dict[str, Any]:
        """The video's latest transcode job: its outcome, attempts and times (its owner or an
        admin)."""
        return await latest_transcode(res, video_id, actor)

    return routes
