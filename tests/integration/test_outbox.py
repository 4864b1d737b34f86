"""The outbox on real PostgreSQL and RabbitMQ: nothing published before commit, nothing lost."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from shared.db.models import TranscodeJobRow as JobRow
from shared.db.models import Video, VideoState
from shared.mq.messages import JOB_ADAPTER
from shared.mq.outbox import add_job, new_transcode_job, relay_pending
from shared.runtime.resources import Resources
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
