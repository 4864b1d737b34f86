"""The transcoder's tests: videos queued by hand, and waiting on what the workers record."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage

from shared.db.models import TranscodeJobRow as JobRow
from shared.db.models import Video, VideoState
from shared.db.repositories import JobRepository, VideoRepository
from shared.mq.messages import TranscodeJob
from shared.mq.outbox import add_job
from shared.runtime.resources import Resources
from tests.support.polling import eventually


async def queued_video(res: Resources, clip: Path) -> TranscodeJob:
    """Store ``clip`` as a source and write its row, queued, without an outbox job.

    Without an outbox row no relay of another test publishes the job; the caller runs it or
    publishes it itself.
    """
    video_id = uuid.uuid4()
    key = f"videos/{video_id}/source"
    await res.need_store().put_file(key, clip)
    async with res.need_db().session() as session:
        VideoRepository(session).add(
            id=video_id, title=clip.stem, state=VideoState.queued.value, source_key=key
        )
    return TranscodeJob(job_id=uuid.uuid4(), video_id=video_id, source_key=key)


async def with_outbox_row(res: Resources, job: TranscodeJob) -> TranscodeJob:
    """Give ``job`` its outbox row, marked as already sent so that no relay publishes it."""
    async with res.need_db().session() as session:
        add_job(session, job).sent_at = datetime.now(UTC)
    return job


async def job_row(res: Resources, job: TranscodeJob, outcome: str, within: float = 15) -> JobRow:
    """The job's outbox row once a worker has recorded ``outcome`` on it.

    Workers record the outcome just after they settle the video and the message, so a test that
    has seen the video's final state polls briefly for the row to catch up.
    """

    async def check() -> JobRow | None:
        async with res.need_db().session() as session:
            row = await JobRepository(session).get(job.job_id)
        assert row is not None, f"job {job.job_id} has no row"
        return row if row.outcome == outcome else None

    return await eventually(check, within=within, what=f"job {job.job_id} to be recorded {outcome}")


async def video_row(res: Resources, video_id: uuid.UUID) -> Video:
    """The video's row with its renditions."""
    async with res.need_db().session() as session:
        return await VideoRepository(session).get(video_id)


async def run_ids(res: Resources, video_id: uuid.UUID) -> set[str]:
    """The run folders that hold objects of the video's ladder."""
    root = f"videos/{video_id}/hls/"
    return {o.key[len(root) :].split("/", 1)[0] for o in await res.need_store().list(root)}


async def runs_removed(res: Resources, video_id: uuid.UUID, within: float = 15) -> None:
    """Wait until no object of any run of the video's ladder is left.

    A worker marks a video failed first and removes the ladder's objects just after, so a test
    that has seen the failed state polls briefly for the objects to go.
    """

    async def check() -> bool:
        return not await run_ids(res, video_id)

    await eventually(check, within=within, what=f"the run objects of video {video_id} to go")


async def take_dead_letters(res: Resources, video_id: uuid.UUID) -> list[AbstractIncomingMessage]:
    """Remove and return the dead-letter messages of ``video_id``; others stay queued."""
    broker = res.need_broker()
    channel = await broker.connection.channel()
    try:
        queue = await channel.get_queue(broker.topology.dead_queue)
        ours, others = [], []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            body = json.loads(message.body)
            (ours if body.get("video_id") == str(video_id) else others).append(message)
        for message in ours:
            await message.ack()
        for message in others:
            await message.nack(requeue=True)
        return ours
    finally:
        await channel.close()


async def dead_letters(
    res: Resources, video_id: uuid.UUID, count: int = 1, within: float = 15
) -> list[AbstractIncomingMessage]:
    """Remove and return the video's dead letters once ``count`` of them have arrived.

    A worker publishes the dead letter just after it marks the video failed, so a test that has
    seen the failed state polls briefly for the message.
    """
    taken: list[AbstractIncomingMessage] = []

    async def check() -> list[AbstractIncomingMessage] | None:
        taken.extend(await take_dead_letters(res, video_id))
        return taken if len(taken) >= count else None

    return await eventually(check, within=within, what=f"{count} dead letter(s) of {video_id}")


async def state_in(res: Resources, video_id: uuid.UUID, states: set[str], within: float) -> Video:
    """The row once the video reaches one of ``states``."""

    async def check() -> Video | None:
        video = await video_row(res, video_id)
        return video if video.state in states else None

    return await eventually(check, within=within, what=f"video {video_id} in {states}")
