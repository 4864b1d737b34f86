"""The transcode-job outbox.

A job row is written in the same transaction as the video's state change. After commit the
relay publishes unsent rows with publisher confirms and marks them sent; a sweeper loop
re-publishes whatever stayed unsent (a crash between commit and publish, a broker outage).
``FOR UPDATE SKIP LOCKED`` lets several relays run without publishing a row twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.core.tasks import cancel_and_wait
from shared.db.engine import Database
from shared.db.models import TranscodeJobRow as JobRow
from shared.mq.broker import Broker
from shared.mq.messages import JOB_ADAPTER, PurgeJob, TranscodeJob

log = logging.getLogger(__name__)

OUTBOX_PUBLISHED = Counter(
    "outbox_published_total", "Outbox jobs published to the broker.", ["type"]
)
OUTBOX_ERRORS = Counter("outbox_publish_errors_total", "Outbox publish attempts that failed.")


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


def new_transcode_job(video_id: uuid.UUID, source_key: str) -> TranscodeJob:
    """A fresh transcode job for a stored source."""
    return TranscodeJob(job_id=uuid.uuid4(), video_id=video_id, source_key=source_key)


async def relay_pending(
    db: Database, broker: Broker, *, limit: int = 100, min_age_seconds: float = 0
) -> int:
    """Publish unsent jobs (older than ``min_age_seconds``); returns how many were sent."""
    cutoff = datetime.now(UTC) - timedelta(seconds=min_age_seconds)
    sent = 0
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(JobRow)
                .where(JobRow.sent_at.is_(None), JobRow.created_at <= cutoff)
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
            except Exception:
                OUTBOX_ERRORS.inc()
                log.warning("publishing job %s failed; the sweeper will retry", row.id)
                break
            row.sent_at = datetime.now(UTC)
            OUTBOX_PUBLISHED.labels(job.type).inc()
            sent += 1
    return sent


class OutboxRelay:
    """Publishes right after a commit (``kick``) and sweeps every ``interval_seconds``."""

    def __init__(self, db: Database, broker: Broker, *, interval_seconds: float = 5.0) -> None:
        self.db = db
        self.broker = broker
        self.interval_seconds = interval_seconds
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
            except Exception:
                log.exception("outbox relay pass failed")

    def start(self) -> None:
        """Run the relay loop in the background."""
        self._task = asyncio.create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the loop."""
        await cancel_and_wait(self._task)
        self._task = None
