"""The finalize step every upload path ends with.

Both upload services (the streamed upload and tus) end here. After a source is fully stored:
ffprobe a local copy of it (never a URL: a playlist probed from a URL fetches the URLs it names),
check it against the media limits, then write the video row and its transcode job in one
transaction. Bytes that are not media, or more media than the limits allow, are deleted and no
row or job is written, so a rejected upload leaves nothing behind.
Until then a video exists only as its progress record in Redis (stage ``uploading``), which is
what ``GET /api/videos/{id}/events`` follows.

A caller that retries (tus, whose upload stays ``finalizing`` until its video exists) keeps the
source when the probe or the commit fails for any reason but the bytes themselves, and commits
its own state with the video (``in_transaction``), so a retry never makes a second video.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from shared.core.errors import NotMedia
from shared.db.models import Privacy, Video, VideoState
from shared.db.repositories import VideoRepository
from shared.media.ffprobe import MediaInfo, probe
from shared.media.limits import MediaLimits
from shared.mq.outbox import add_job, new_transcode_job
from shared.runtime.resources import Resources
from shared.storage.base import ObjectStore
from shared.storage.local import media_location
from shared.videos import progress
from shared.videos.webhooks import enqueue_event

log = logging.getLogger(__name__)


@dataclass
class SourceMetadata:
    title: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    filename: str | None = None
    privacy: Privacy = Privacy.public


def source_key(video_id: uuid.UUID) -> str:
    """Where a video's source file is stored."""
    return f"videos/{video_id}/source"


async def reject_progress(res: Resources, video_id: uuid.UUID, reason: str) -> None:
    """Tell listeners the upload was refused, then drop its progress record."""
    if res.redis is None:
        return
    try:
        await progress.publish(res.redis, video_id, stage="rejected", error=reason)
        await res.redis.delete(progress.progress_key(video_id))
    except Exception:
        log.warning("could not record the rejection of %s in Redis", video_id)


async def probe_stored(store: ObjectStore, key: str, *, label: str = "") -> MediaInfo:
    """Probe a stored object on a local copy (the file itself on disk, else a download)."""
    async with media_location(store, key) as location:
        return await probe(location, label=label or key)


async def _refuse(
    res: Resources, store: ObjectStore, key: str, video_id: uuid.UUID, why: str
) -> None:
    await store.delete(key)
    await reject_progress(res, video_id, why)


async def finalize_source(
    res: Resources,
    *,
    video_id: uuid.UUID,
    key: str,
    size: int,
    sha256: str | None,
    meta: SourceMetadata,
    owner_id: uuid.UUID | None,
    keep_on_error: bool = False,
    in_transaction: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> Video:
    """Probe the stored source, then commit the video (queued, owned by ``owner_id``) and its job.

    Refused bytes are always deleted; other failures delete them unless ``keep_on_error``.
    ``in_transaction`` runs in the video's transaction, which commits only if it succeeds.
    """
    store = res.need_store()
    db = res.need_db()
    # Taken before the commit: a process without a relay must fail before the upload is recorded.
    relay = res.need_outbox()
    limits = MediaLimits.from_settings(res.settings)
    try:
        info = await probe_stored(store, key, label=f"video {video_id}")
        limits.check(info)
    except NotMedia as exc:
        log.info("upload %s rejected: %s", video_id, exc.detail)
        await _refuse(res, store, key, video_id, exc.detail)
        raise
    except BaseException:
        if not keep_on_error:
            await _refuse(res, store, key, video_id, "the upload could not be checked")
        raise
    width, height = info.display_size or (None, None)
    try:
        async with db.session() as session:
            repo = VideoRepository(session)
            video = repo.add(
                id=video_id,
                title=meta.title or (meta.filename or "untitled"),
                description=meta.description,
                tags=meta.tags,
                state=VideoState.queued.value,
                source_key=key,
                source_size=size,
                source_sha256=sha256,
                filename=meta.filename,
                duration_seconds=info.duration_seconds,
                width=width,
                height=height,
                has_video=info.has_video,
                has_audio=info.has_audio,
                owner_id=owner_id,
                privacy=meta.privacy.value,
            )
            await session.flush()
            add_job(session, new_transcode_job(video_id, key))
            await enqueue_event(session, video, "video.uploaded")
            if in_transaction is not None:
                await in_transaction(session)
    except BaseException:
        if not keep_on_error:
            await _refuse(res, store, key, video_id, "the upload could not be recorded")
        raise
    if res.redis is not None:
        await progress.publish(
            res.redis, video_id, stage=VideoState.queued.value, bytes_received=size
        )
    relay.kick()
    log.info(
        "video %s stored (%d bytes, %.1f s); transcode queued",
        video_id,
        size,
        info.duration_seconds,
    )
    return video
