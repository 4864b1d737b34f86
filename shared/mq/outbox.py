"""The transcode-job outbox.

A job row is written in the same transaction as the video's state change. After commit the
relay publishes unsent rows with publisher confirms and marks them sent; a sweeper loop
re-publishes whatever stayed unsent (a crash between commit and publish, a broker outage).
``FOR UPDATE SKIP LOCKED`` lets several relays run without publishing a row twice at once.

A row is marked sent only on the broker's confirm that a queue took it: a publish that times
out (the broker hangs; the row locks are held meanwhile) or that the broker returns as
unroutable (the jobs queue is missing) leaves the row for the next pass. Sent rows are deleted
once they are older than the retention; workers keep their outcome on them until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.core.tasks import cancel_and_wait
from shared.db.engine import Database
from shared.db.models import TranscodeJobRow as JobRow
from shared.mq.broker import Broker, Unroutable
from shared.mq.messages import JOB_ADAPTER, PurgeJob, TranscodeJob

log = logging.getLogger(__name__)

OUTBOX_PUBLISHED = Counter(
    "outbox_published_total", "Outbox jobs published to the broker.", ["type"]
)
OUTBOX_ERRORS = Counter("outbox_publish_errors_total", "Outbox publish attempts that failed.")
OUTBOX_UNROUTABLE = Counter(
    "outbox_unroutable_total", "Outbox jobs the broker returned because no queue was bound."
)
OUTBOX_PRUNED = Counter("outbox_pruned_total", "Sent outbox rows deleted after the retention.")


def add_job(session: AsyncSession, job: TranscodeJob | PurgeJob) -> JobRow:
    """Stage ``job`` in the caller's transaction; it is published only after commit."""
    row = JobRow(
        id=job.job_id,
        video_id=job.video_id,
        type=job.type,
        payload=job.model_dump(mode="json", exclude={"published_at"}),
    )
    session.add(row)
    return row


def new_transcode_job(
    video_id: uuid.UUID, source_key: str, *, retranscode: bool = False
) -> TranscodeJob:
    """A fresh transcode job for a stored source (``retranscode``: a new run of a ready video)."""
    return TranscodeJob(
        job_id=uuid.uuid4(), video_id=video_id, source_key=source_key, retranscode=retranscode
    )


# Outcomes after which a job runs no more (until an operator replays it).
SETTLED_OUTCOMES = ("succeeded", "skipped", "failed")


async def pending_transcode(session: AsyncSession, video_id: uuid.UUID) -> JobRow | None:
    """The video's transcode job that is queued, running or waiting for a retry, if any."""
    return await session.scalar(
        select(JobRow)
        .where(
            JobRow.video_id == video_id,
            JobRow.type == "transcode",
            or_(JobRow.outcome.is_(None), JobRow.outcome.not_in(SETTLED_OUTCOMES)),
        )
        .order_by(JobRow.created_at.desc())
        .limit(1)
    )


async def latest_job(session: AsyncSession, video_id: uuid.UUID) -> JobRow | None:
    """The video's most recent transcode job, whatever its outcome."""
    return await session.scalar(
        select(JobRow)
        .where(JobRow.video_id == video_id, JobRow.type == "transcode")
        .order_by(JobRow.created_at.desc())
        .limit(1)
    )


async def reopen_job(session: AsyncSession, job_id: uuid.UUID) -> JobRow | None:
    """Make a dead-lettered job's row read as queued again, its attempts reset (a replay)."""
    row = await session.get(JobRow, job_id, with_for_update=True)
    if row is not None:
        row.outcome = None
        row.started_at = None
        row.finished_at = None
        row.attempts = 0
        row.error = None
    return row


async def scheduled_purges(session: AsyncSession, video_id: uuid.UUID) -> set[str]:
    """The prefixes of the video's replaced runs whose deletion is still to come."""
    payloads = await session.scalars(
        select(JobRow.payload).where(
            JobRow.video_id == video_id,
            JobRow.type == "purge",
            JobRow.outcome.is_distinct_from("succeeded"),
        )
    )
    return {str(p["prefix"]) for p in payloads if p.get("prefix")}


async def relay_pending(
    db: Database,
    broker: Broker,
    *,
    limit: int = 100,
    min_age_seconds: float = 0,
    job_ids: Collection[uuid.UUID] | None = None,
) -> int:
    """Publish unsent jobs (older than ``min_age_seconds``; only ``job_ids`` when given);
    returns how many were sent."""
    cutoff = datetime.now(UTC) - timedelta(seconds=min_age_seconds)
    conditions = [JobRow.sent_at.is_(None), JobRow.created_at <= cutoff]
    if job_ids is not None:
        conditions.append(JobRow.id.in_(list(job_ids)))
    sent = 0
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(JobRow)
                .where(*conditions)
                .order_by(JobRow.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            row.publish_attempts += 1
            job = JOB_ADAPTER.validate_python(row.payload)
            try:
                await broker.publish_job(job)
            except Unroutable as exc:
                OUTBOX_UNROUTABLE.inc()
                log.error("job %s stays unsent, the sweeper will retry: %s", row.id, exc)
                break
            except Exception as exc:
                OUTBOX_ERRORS.inc()
                log.warning("publishing job %s failed (%r); the sweeper will retry", row.id, exc)
                break
            row.sent_at = datetime.now(UTC)
            OUTBOX_PUBLISHED.labels(job.type).inc()
            sent += 1
    return sent


async def prune_sent(db: Database, *, retention_seconds: float, limit: int = 1000) -> int:
    """Delete up to ``limit`` rows sent more than ``retention_seconds`` ago; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
    async with db.session() as session:
        old = (
            select(JobRow.id)
            .where(JobRow.sent_at < cutoff)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await session.execute(delete(JobRow).where(JobRow.id.in_(old)))
    count = int(getattr(result, "rowcount", 0) or 0)
    OUTBOX_PRUNED.inc(count)
    return count


class OutboxRelay:
    """Publishes right after a commit (``kick``), sweeps every ``interval_seconds`` and prunes
    sent rows older than ``retention_seconds`` every ``prune_every_seconds``."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        *,
        interval_seconds: float = 5.0,
        retention_seconds: float = 7 * 86_400,
        prune_every_seconds: float = 600,
    ) -> None:
        self.db = db
        self.broker = broker
        self.interval_seconds = interval_seconds
        self.retention_seconds = retention_seconds
        self.prune_every_seconds = prune_every_seconds
        self._next_prune = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Ask the relay to publish now."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_seconds)
            self._wake.clear()
            try:
                count = await relay_pending(self.db, self.broker)
                if count:
                    log.info("outbox: published %d job(s)", count)
                await self._prune_when_due()
            except Exception:
                log.exception("outbox relay pass failed")

    async def _prune_when_due(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.prune_every_seconds
        count = await prune_sent(self.db, retention_seconds=self.retention_seconds)
        if count:
            log.info("outbox: deleted %d sent row(s) past the retention", count)

    def start(self) -> None:
        """Run the relay loop in the background."""
        self._task = asyncio.create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the loop."""
        await cancel_and_wait(self._task)
        self._task = None
