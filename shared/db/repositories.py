"""SQL for videos and renditions; services call these instead of writing queries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shared.core.errors import Conflict, NotFound
from shared.db.models import (
    ALLOWED_TRANSITIONS,
    Privacy,
    Rendition,
    TranscodeJobRow,
    Upload,
    User,
    Video,
    VideoState,
)


class VideoRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, video_id: uuid.UUID, *, for_update: bool = False) -> Video:
        """The video with its renditions; NotFound when missing or deleted."""
        stmt = select(Video).where(Video.id == video_id).options(selectinload(Video.renditions))
        if for_update:
            stmt = stmt.with_for_update()
        video = await self.session.scalar(stmt)
        if video is None or video.state == VideoState.deleted.value:
            raise NotFound(f"video {video_id} does not exist")
        return video

    async def find(self, video_id: uuid.UUID) -> Video | None:
        """The video in any state, or None."""
        return await self.session.get(Video, video_id)

    async def id_of_track(self, track_id: str) -> uuid.UUID | None:
        """The video a streaming-gateway ``track_id`` names, if any."""
        return await self.session.scalar(select(Video.id).where(Video.track_id == track_id))

    async def channel_of(self, video: Video) -> str | None:
        """The name of the account (its channel) that owns the video, if any."""
        if video.owner_id is None:
            return None
        return await self.session.scalar(select(User.name).where(User.id == video.owner_id))

    def add(self, **fields: Any) -> Video:
        """Stage a new video row."""
        video = Video(**fields)
        self.session.add(video)
        return video

    async def transition(self, video: Video, new: VideoState, *, error: str | None = None) -> Video:
        """Move the video to ``new`` if the state machine allows it, else Conflict."""
        current = VideoState(video.state)
        if new not in ALLOWED_TRANSITIONS[current]:
            raise Conflict(f"video {video.id} cannot go from {current.value} to {new.value}")
        video.state = new.value
        video.error = error
        if new is VideoState.ready:
            video.ready_at = datetime.now(UTC)
        await self.session.flush()
        return video

    async def replace_renditions(
        self, video_id: uuid.UUID, renditions: Sequence[dict[str, Any]]
    ) -> None:
        """Make ``renditions`` the video's only renditions (idempotent for redelivered jobs)."""
        await self.session.execute(delete(Rendition).where(Rendition.video_id == video_id))
        for fields in renditions:
            self.session.add(Rendition(video_id=video_id, **fields))
        await self.session.flush()

    async def list(
        self,
        *,
        query: str | None = None,
        state: str | None = None,
        viewer_id: uuid.UUID | None = None,
        everything: bool = False,
        owner_id: uuid.UUID | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[Sequence[Video], int]:
        """Videos newest first, filtered by a title/description/tag search and a state.

        Listed: public videos and every video of ``viewer_id`` (all of them if ``everything``),
        only those of ``owner_id`` when given.
        """
        conditions = [Video.state != VideoState.deleted.value]
        if not everything:
            listed = Video.privacy == Privacy.public.value
            if viewer_id is not None:
                listed = or_(listed, Video.owner_id == viewer_id)
            conditions.append(listed)
        if owner_id is not None:
            conditions.append(Video.owner_id == owner_id)
        if state:
            conditions.append(Video.state == state)
        if query:
            pattern = f"%{query}%"
            conditions.append(
                or_(
                    Video.title.ilike(pattern),
                    Video.description.ilike(pattern),
                    Video.tags.any_() == query,
                )
            )
        total = await self.session.scalar(
            select(func.count()).select_from(Video).where(*conditions)
        )
        rows = await self.session.scalars(
            select(Video)
            .where(*conditions)
            .options(selectinload(Video.renditions))
            .order_by(Video.created_at.desc())
            .limit(limit)
            .offset(offset)
        )
        return rows.all(), int(total or 0)

    async def set_fields(self, video_id: uuid.UUID, **fields: Any) -> None:
        """Update columns without loading the row."""
        await self.session.execute(update(Video).where(Video.id == video_id).values(**fields))

    async def stored_bytes(self, owner_id: uuid.UUID) -> int:
        """The bytes of the sources of ``owner_id``'s videos (deleted ones no longer count)."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(Video.source_size), 0)).where(
                Video.owner_id == owner_id, Video.state != VideoState.deleted.value
            )
        )
        return int(total or 0)

    async def purge(self, video_id: uuid.UUID) -> None:
        """Delete the video's row with everything that refers to it (renditions, jobs, uploads)."""
        await self.session.execute(delete(Upload).where(Upload.video_id == video_id))
        # Renditions and transcode jobs go with the row (ON DELETE CASCADE).
        await self.session.execute(delete(Video).where(Video.id == video_id))


class JobRepository:
    """The outbox rows of jobs, as workers run them: which attempt, which worker, how it ended.

    A job that succeeded stays succeeded: a copy the broker delivers again (its first ack was
    lost with a channel) neither restarts nor overwrites the record.
    """

    SUCCEEDED = "succeeded"

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _unless_succeeded(self, job_id: uuid.UUID) -> Any:
        return update(TranscodeJobRow).where(
            TranscodeJobRow.id == job_id,
            TranscodeJobRow.outcome.is_distinct_from(self.SUCCEEDED),
        )

    async def started(self, job_id: uuid.UUID, *, worker_mode: str, attempt: int) -> None:
        """A worker took the job (again): a redelivery or a retry starts a fresh record."""
        await self.session.execute(
            self._unless_succeeded(job_id).values(
                started_at=func.now(),
                finished_at=None,
                outcome=None,
                worker_mode=worker_mode,
                attempts=attempt,
            )
        )

    async def finished(self, job_id: uuid.UUID, outcome: str, *, error: str | None = None) -> None:
        """The attempt ended: succeeded, skipped, deferred, retried (with ``error``), failed
        (with ``error``) or handed_back."""
        await self.session.execute(
            self._unless_succeeded(job_id).values(
                finished_at=func.now(), outcome=outcome, error=error
            )
        )

    async def succeeded(self, job_id: uuid.UUID) -> bool:
        """Whether a delivery of the job has already succeeded."""
        outcome = await self.session.scalar(
            select(TranscodeJobRow.outcome).where(TranscodeJobRow.id == job_id)
        )
        return outcome == self.SUCCEEDED

    async def get(self, job_id: uuid.UUID) -> TranscodeJobRow | None:
        return await self.session.get(TranscodeJobRow, job_id, populate_existing=True)
