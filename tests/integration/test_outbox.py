"""The outbox on real PostgreSQL and RabbitMQ: nothing published before commit, nothing lost.

A row is marked sent only when a queue took its job: a publish the broker returns (no queue
is bound) or that hangs (a broker blocked by its memory alarm, on a node of the test's own)
leaves the row unsent, its lock released, for the next pass. Old sent rows are pruned.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, text, update

from shared.db.models import TranscodeJobRow as JobRow
from shared.db.models import Video, VideoState
from shared.mq.broker import Broker
from shared.mq.messages import JOB_ADAPTER
from shared.mq.outbox import add_job, new_transcode_job, prune_sent, relay_pending
from shared.mq.topology import Topology
from shared.runtime.resources import Resources
from tests.support.infra import PrivateRabbit, delete_topology
from tests.support.polling import eventually


async def _drain(res: Resources) -> list[str]:
    """Take every message off the jobs queue; returns their job ids."""
    channel = await res.need_broker().connection.channel()
    queue = await channel.get_queue(res.need_broker().topology.jobs_queue)
    ids = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        ids.append(str(JOB_ADAPTER.validate_json(message.body).job_id))
    await channel.close()
    return ids


async def _drained(res: Resources, *job_ids: uuid.UUID) -> list[str]:
    """Take messages off the jobs queue until every one of ``job_ids`` has come; returns all.

    Publishing is confirmed, but a confirm does not promise that a ``basic.get`` on another
    channel sees the message that very moment, so poll briefly instead of assuming it.
    """
    wanted = {str(i) for i in job_ids}
    drained: list[str] = []

    async def check() -> list[str] | None:
        drained.extend(await _drain(res))
        return drained if wanted <= set(drained) else None

    return await eventually(check, within=10, what=f"jobs {sorted(wanted)} on the queue")


async def _new_video(res: Resources, *, commit: bool) -> tuple[uuid.UUID, uuid.UUID]:
    video_id = uuid.uuid4()
    job = new_transcode_job(video_id, f"videos/{video_id}/source")
    db = res.need_db()
    async with db.sessions() as session:
        session.add(Video(id=video_id, state=VideoState.queued.value, title="t"))
        await session.flush()
        add_job(session, job)
        if commit:
            await session.commit()
        else:
            await session.rollback()
    return video_id, job.job_id


@pytest.fixture
async def clean_queue(res: Resources) -> None:
    await relay_pending(res.need_db(), res.need_broker(), limit=10_000)
    await _drain(res)


async def test_committed_job_is_published_once(res: Resources, clean_queue: None) -> None:
    _, job_id = await _new_video(res, commit=True)
    assert await relay_pending(res.need_db(), res.need_broker()) >= 1
    assert await relay_pending(res.need_db(), res.need_broker()) == 0
    assert (await _drained(res, job_id)).count(str(job_id)) == 1
    async with res.need_db().session() as session:
        row = await session.get(JobRow, job_id)
        assert row is not None and row.sent_at is not None and row.publish_attempts == 1


async def test_rolled_back_job_is_never_published(res: Resources, clean_queue: None) -> None:
    _, job_id = await _new_video(res, commit=False)
    # A committed job after it: once that one is on the queue, the relay pass is over.
    _, marker = await _new_video(res, commit=True)
    assert await relay_pending(res.need_db(), res.need_broker()) >= 1
    assert str(job_id) not in await _drained(res, marker)


async def test_unsent_job_waits_for_the_sweeper_age(res: Resources, clean_queue: None) -> None:
    _, job_id = await _new_video(res, commit=True)
    assert await relay_pending(res.need_db(), res.need_broker(), min_age_seconds=3600) == 0
    async with res.need_db().session() as session:
        unsent = await session.scalar(select(JobRow.sent_at).where(JobRow.id == job_id))
        assert unsent is None
    assert await relay_pending(res.need_db(), res.need_broker()) >= 1
    assert (await _drained(res, job_id)).count(str(job_id)) == 1


async def test_concurrent_relays_do_not_publish_twice(res: Resources, clean_queue: None) -> None:
    ids = [(await _new_video(res, commit=True))[1] for _ in range(20)]
    counts = await asyncio.gather(
        *(relay_pending(res.need_db(), res.need_broker()) for _ in range(4))
    )
    assert sum(counts) == 20
    wanted = sorted(str(i) for i in ids)
    drained = await _drained(res, *ids)
    # Each of them exactly once (whatever else the session left on the queue goes too).
    assert sorted(i for i in drained if i in wanted) == wanted


def _count(name: str) -> float:
    """A counter of this process, as its /metrics would show it."""
    return REGISTRY.get_sample_value(name) or 0.0


async def _row(res: Resources, job_id: uuid.UUID) -> JobRow:
    async with res.need_db().session() as session:
        row = await session.get(JobRow, job_id)
        assert row is not None
        return row


async def _lockable(res: Resources, job_id: uuid.UUID) -> bool:
    """Whether nobody holds the row's lock (a relay pass that gave up released it)."""
    async with res.need_db().session() as session:
        locked = await session.execute(
            text("SELECT 1 FROM transcode_jobs WHERE id = :id FOR UPDATE NOWAIT"), {"id": job_id}
        )
        return locked.first() is not None


async def test_an_unroutable_job_stays_unsent_until_its_queue_is_back(
    res: Resources, clean_queue: None
) -> None:
    broker = Broker(res.need_broker().url, Topology(f"unroutable-{uuid.uuid4().hex[:8]}"))
    await broker.connect()
    try:
        channel = await broker.connection.channel()
        await channel.queue_delete(broker.topology.jobs_queue)
        _, job_id = await _new_video(res, commit=True)
        returned = _count("outbox_unroutable_total")
        assert await relay_pending(res.need_db(), broker) == 0
        assert _count("outbox_unroutable_total") == returned + 1
        row = await _row(res, job_id)
        assert row.sent_at is None and row.publish_attempts == 1
        # Its queue declared again, the next pass sends it.
        await broker.connect()
        assert await relay_pending(res.need_db(), broker) == 1
        assert (await _row(res, job_id)).sent_at is not None
        await channel.close()
    finally:
        await delete_topology(broker.connection, broker.topology)
        await broker.close()


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateRabbit]:
    node = PrivateRabbit.create()
    yield node
    node.destroy()


@pytest.fixture
async def blockable(rabbit: PrivateRabbit) -> AsyncIterator[Broker]:
    """A broker on a node of the test's own, whose publishes time out after 1 s."""
    broker = Broker(rabbit.url, Topology("blocked"), publish_timeout_seconds=1)
    await broker.connect()
    try:
        yield broker
    finally:
        await asyncio.to_thread(rabbit.ctl, "set_vm_memory_high_watermark", "0.4")
        await delete_topology(broker.connection, broker.topology)
        await broker.close()


async def test_a_publish_to_a_hung_broker_times_out_and_releases_the_row(
    res: Resources, rabbit: PrivateRabbit, blockable: Broker, clean_queue: None
) -> None:
    _, job_id = await _new_video(res, commit=True)
    # A memory alarm: the broker takes publishes and holds them, confirming nothing.
    await asyncio.to_thread(rabbit.ctl, "set_vm_memory_high_watermark", "0")
    failed = _count("outbox_publish_errors_total")
    started = time.monotonic()
    assert await relay_pending(res.need_db(), blockable) == 0
    assert time.monotonic() - started < 5
    assert _count("outbox_publish_errors_total") == failed + 1
    row = await _row(res, job_id)
    assert row.sent_at is None and row.publish_attempts == 1
    assert await _lockable(res, job_id)
    await asyncio.to_thread(rabbit.ctl, "set_vm_memory_high_watermark", "0.4")

    async def sent() -> int:
        return await relay_pending(res.need_db(), blockable)

    assert await eventually(sent, within=15, what="the job to be sent") == 1
    assert (await _row(res, job_id)).sent_at is not None


async def test_sent_rows_past_the_retention_are_pruned(res: Resources, clean_queue: None) -> None:
    ids = [(await _new_video(res, commit=True))[1] for _ in range(3)]
    old, recent, unsent = ids
    week_ago = datetime.now(UTC) - timedelta(days=8)
    async with res.need_db().session() as session:
        await session.execute(update(JobRow).where(JobRow.id == old).values(sent_at=week_ago))
        await session.execute(
            update(JobRow).where(JobRow.id == recent).values(sent_at=datetime.now(UTC))
        )
    assert await prune_sent(res.need_db(), retention_seconds=7 * 86_400) == 1
    async with res.need_db().session() as session:
        left = set(await session.scalars(select(JobRow.id).where(JobRow.id.in_(ids))))
    assert left == {recent, unsent}
