"""What the outbox rows say about a video's jobs, on real PostgreSQL and RabbitMQ: the transcode
still to run, the replaced runs still to delete, a replayed row, one row relayed by id."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from shared.db.models import VideoState
from shared.db.repositories import JobRepository, VideoRepository
from shared.mq.broker import Broker
from shared.mq.messages import PurgeJob
from shared.mq.outbox import (
    add_job,
    latest_job,
    new_transcode_job,
    pending_transcode,
    relay_pending,
    reopen_job,
    scheduled_purges,
)
from shared.runtime.resources import Resources
from tests.support.infra import delete_topology


async def _video(res: Resources) -> uuid.UUID:
    video_id = uuid.uuid4()
    async with res.need_db().session() as session:
        VideoRepository(session).add(id=video_id, title="rows", state=VideoState.ready.value)
    return video_id


async def test_a_transcode_is_pending_until_its_outcome_settles_it(res: Resources) -> None:
    video_id = await _video(res)
    job = new_transcode_job(video_id, f"videos/{video_id}/source", retranscode=True)
    async with res.need_db().session() as session:
        assert await pending_transcode(session, video_id) is None
        add_job(session, job).sent_at = datetime.now(UTC)
    for outcome in (None, "started", "retried", "handed_back", "failed", "succeeded"):
        async with res.need_db().session() as session:
            if outcome == "started":
                await JobRepository(session).started(job.job_id, worker_mode="push", attempt=1)
            elif outcome is not None:
                await JobRepository(session).finished(job.job_id, outcome, error="why")
        async with res.need_db().session() as session:
            pending = await pending_transcode(session, video_id)
            latest = await latest_job(session, video_id)
        settled = outcome in ("failed", "succeeded")
        assert (pending is None) == settled, outcome
        assert latest is not None and latest.id == job.job_id
        assert latest.payload["retranscode"] is True

    # A replay reopens the failed row: queued again, no attempts, no error.
    async with res.need_db().session() as session:
        await JobRepository(session).finished(job.job_id, "failed", error="not media")
    async with res.need_db().session() as session:
        await JobRepository(session).started(job.job_id, worker_mode="push", attempt=2)
    async with res.need_db().session() as session:
        row = await reopen_job(session, job.job_id)
        assert row is not None
    async with res.need_db().session() as session:
        row = await JobRepository(session).get(job.job_id)
        assert row is not None
        assert (row.outcome, row.attempts, row.error, row.started_at) == (None, 0, None, None)
        assert await pending_transcode(session, video_id) is not None
        assert await reopen_job(session, uuid.uuid4()) is None


async def test_replaced_runs_stay_scheduled_until_their_purge_succeeds(res: Resources) -> None:
    video_id = await _video(res)
    runs = [f"videos/{video_id}/hls/{name}/" for name in ("a", "b")]
    jobs = [PurgeJob(job_id=uuid.uuid4(), video_id=video_id, prefix=run) for run in runs]
    async with res.need_db().session() as session:
        for job in jobs:
            add_job(session, job).sent_at = datetime.now(UTC)
        # The purge of a deleted video names no run.
        add_job(session, PurgeJob(job_id=uuid.uuid4(), video_id=video_id))
    async with res.need_db().session() as session:
        assert await scheduled_purges(session, video_id) == set(runs)
        await JobRepository(session).finished(jobs[0].job_id, "deferred")
        await JobRepository(session).finished(jobs[1].job_id, "succeeded")
    async with res.need_db().session() as session:
        assert await scheduled_purges(session, video_id) == {runs[0]}


@pytest.fixture
async def private_broker(res: Resources) -> AsyncIterator[Broker]:
    """A broker on exchanges and queues of the test's own, deleted afterwards."""
    shared = res.need_broker()
    topology = dataclasses.replace(
        shared.topology, prefix=f"{shared.topology.prefix}.{uuid.uuid4().hex[:8]}"
    )
    broker = Broker(shared.url, topology, heartbeat_seconds=0)
    await broker.connect()
    try:
        yield broker
    finally:
        await delete_topology(broker.connection, topology)
        await broker.close()


async def test_relaying_by_id_publishes_only_those_rows(
    res: Resources, private_broker: Broker
) -> None:
    video_id = await _video(res)
    ours, other = (new_transcode_job(video_id, "k") for _ in range(2))
    async with res.need_db().session() as session:
        add_job(session, ours)
        add_job(session, other)
    try:
        sent = await relay_pending(res.need_db(), private_broker, job_ids=[ours.job_id])
        assert sent == 1
        async with res.need_db().session() as session:
            jobs = JobRepository(session)
            published, unsent = await jobs.get(ours.job_id), await jobs.get(other.job_id)
        assert published is not None and published.sent_at is not None
        assert unsent is not None and unsent.sent_at is None
        queue = private_broker.declared.jobs_queue
        message = await queue.get(no_ack=True, fail=False)
        assert message is not None and message.message_id == str(ours.job_id)
    finally:
        async with res.need_db().session() as session:
            # No relay of the session may publish the row left unsent.
            await VideoRepository(session).purge(video_id)
