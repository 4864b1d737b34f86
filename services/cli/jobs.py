"""``vsp jobs``: the dead-lettered transcode jobs, and replaying them once their cause is gone.

Operator commands: they use RabbitMQ (``AMQP_URL``, ``MQ_PREFIX``) and PostgreSQL
(``DATABASE_URL``) directly. Listing reads the dead-letter queue without taking anything from
it. A replay first marks the job's row queued again (and a failed video queued), then publishes
the job to the jobs exchange with its attempts reset, and removes the dead letter only once the
broker has confirmed the publish: interrupted at any point, the job is either still dead (replay
it again) or queued, never lost. The job keeps its id, so a worker skips a second copy of a job
that has already succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    # Imported where used: every other vsp command would pay for them at start.
    from aio_pika.abc import AbstractIncomingMessage

    from shared.core.settings import BaseServiceSettings
    from shared.db.engine import Database
    from shared.mq.broker import Broker
    from shared.mq.messages import PurgeJob, TranscodeJob

jobs_app = typer.Typer(
    help="Dead-lettered transcode jobs: list them, replay them. Operator commands; they use "
    "RabbitMQ (AMQP_URL, MQ_PREFIX) and the database (DATABASE_URL) directly.",
    no_args_is_help=True,
)

T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts), not a table.")]
FAILURE_HEADER = "x-failure-reason"
COLUMNS = ("job", "type", "video", "attempts", "died at", "reason")


@dataclass(frozen=True)
class DeadJob:
    """One dead letter, with what the database says about its job and video."""

    job_id: str
    type: str
    video_id: str | None
    attempts: int | None
    died_at: str | None
    reason: str
    outcome: str | None = None
    error: str | None = None
    video_state: str | None = None
    video_error: str | None = None


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _when(value: object) -> str | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat(timespec="seconds")
    return None


def dead_reason(headers: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """Why a message was dead-lettered, and when (ISO 8601, when the broker says).

    A worker that buries a job says why in ``x-failure-reason``; the broker's own dead-lettering
    (a job delivered ``MQ_DELIVERY_LIMIT`` times without an ack) is told by ``x-death``.
    """
    headers = headers or {}
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else {}
    died_at = _when(first.get("time")) if isinstance(first, Mapping) else None
    if FAILURE_HEADER in headers:
        return _text(headers[FAILURE_HEADER]), died_at
    if isinstance(first, Mapping) and first:
        why = _text(first.get("reason", "dead-lettered"))
        if why == "delivery_limit":
            why = "delivered too many times without an ack (delivery_limit)"
        return f"{why}, from {_text(first.get('queue', '?'))}", died_at
    return "dead-lettered (no reason recorded)", died_at


def parse_job(body: bytes) -> TranscodeJob | PurgeJob | None:
    """The job a message carries, or None when it carries none."""
    from pydantic import ValidationError

    from shared.mq.messages import JOB_ADAPTER

    try:
        return JOB_ADAPTER.validate_json(body)
    except ValidationError:
        return None


def format_table(jobs: Sequence[DeadJob]) -> str:
    """The dead jobs as a plain-text table, one line each."""
    rows = [
        (
            j.job_id,
            j.type,
            j.video_id or "-",
            "-" if j.attempts is None else str(j.attempts),
            j.died_at or "-",
            j.reason + (f" (video {j.video_state}: {j.video_error})" if j.video_error else ""),
        )
        for j in jobs
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(COLUMNS)]
    lines = [COLUMNS, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


async def _describe(db: Database, message: AbstractIncomingMessage) -> DeadJob:
    from shared.db.repositories import JobRepository, VideoRepository

    job = parse_job(message.body)
    reason, died_at = dead_reason(message.headers)
    if job is None:
        return DeadJob(message.message_id or "?", "malformed", None, None, died_at, reason)
    async with db.session() as session:
        row = await JobRepository(session).get(job.job_id)
        video = await VideoRepository(session).find(job.video_id)
    if died_at is None and row is not None:
        died_at = _when(row.finished_at)
    return DeadJob(
        job_id=str(job.job_id),
        type=job.type,
        video_id=str(job.video_id),
        attempts=row.attempts if row is not None and row.attempts else job.attempt,
        died_at=died_at,
        reason=reason,
        outcome=row.outcome if row is not None else None,
        error=row.error if row is not None else None,
        video_state=video.state if video is not None else "gone",
        video_error=video.error if video is not None else None,
    )


async def _connected(settings: BaseServiceSettings) -> tuple[Broker, Database]:
    from shared.db.engine import Database
    from shared.mq.broker import Broker

    broker = Broker.from_settings(settings)
    await broker.connect()
    return broker, Database(settings.database_url, pool_size=1)


async def _hand_back(held: list[AbstractIncomingMessage]) -> None:
    """Put messages taken only to look at back on their queue, in their order. On a channel that
    is gone the broker has put them back already."""
    with contextlib.suppress(Exception):
        for message in held:
            await message.nack(requeue=True)


async def list_dead(settings: BaseServiceSettings, limit: int) -> list[DeadJob]:
    """Up to ``limit`` dead letters, oldest first; the queue keeps every one of them."""
    broker, db = await _connected(settings)
    try:
        channel = await broker.open_channel()
        held: list[AbstractIncomingMessage] = []
        try:
            queue = await channel.get_queue(broker.topology.dead_queue)
            while len(held) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
            return [await _describe(db, message) for message in held]
        finally:
            await _hand_back(held)
            await channel.close()
    finally:
        await broker.close()
        await db.close()


async def _reopen(db: Database, job: TranscodeJob | PurgeJob) -> None:
    """The job's row queued again with no attempts; its failed video queued again."""
    from shared.db.models import VideoState
    from shared.db.repositories import VideoRepository
    from shared.mq.messages import TranscodeJob
    from shared.mq.outbox import reopen_job

    async with db.session() as session:
        await reopen_job(session, job.job_id)
        if isinstance(job, TranscodeJob):
            videos = VideoRepository(session)
            video = await videos.find(job.video_id)
            if video is not None and video.state == VideoState.failed.value:
                await videos.transition(video, VideoState.queued)


async def replay_dead(settings: BaseServiceSettings, job_id: uuid.UUID | None) -> list[str]:
    """Requeue the dead job ``job_id`` (every dead job when None); the ids requeued."""
    broker, db = await _connected(settings)
    try:
        channel = await broker.open_channel()
        held: list[AbstractIncomingMessage] = []
        replayed: list[str] = []
        try:
            queue = await channel.get_queue(broker.topology.dead_queue)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                job = parse_job(message.body)
                # A job replayed here that died again meanwhile waits for the next replay.
                if (
                    job is None
                    or (job_id is not None and job.job_id != job_id)
                    or str(job.job_id) in replayed
                ):
                    held.append(message)
                    continue
                await _reopen(db, job)
                fresh = job.model_copy(update={"attempt": 1, "published_at": time.time()})
                await broker.publish_job(fresh)  # returns once the broker confirmed it
                await message.ack()
                replayed.append(str(job.job_id))
                if job_id is not None:
                    break
        finally:
            await _hand_back(held)
            await channel.close()
        return replayed
    finally:
        await broker.close()
        await db.close()


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; a broker or database that cannot be reached ends the command with why."""
    from aio_pika.exceptions import AMQPConnectionError
    from sqlalchemy.exc import DBAPIError

    try:
        return asyncio.run(work)
    except (OSError, AMQPConnectionError, DBAPIError) as exc:
        typer.echo(f"cannot reach RabbitMQ or the database: {exc}", err=True)
        raise typer.Exit(1) from None


def _settings() -> BaseServiceSettings:
    from services.runtime.settings import load_settings
    from shared.core.settings import BaseServiceSettings

    return load_settings(BaseServiceSettings)


@jobs_app.command("dead")
def dead(
    as_json: AsJson = False,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="Show at most this many, oldest first.")
    ] = 1000,
) -> None:
    """List dead-lettered jobs: job and video ids, attempts, when and why they died."""
    jobs = _run(list_dead(_settings(), limit))
    if as_json:
        typer.echo(json.dumps([asdict(j) for j in jobs], indent=2))
    elif not jobs:
        typer.echo("no dead-lettered jobs")
    else:
        typer.echo(format_table(jobs))


@jobs_app.command("replay")
def replay(
    job_id: Annotated[
        uuid.UUID | None,
        typer.Argument(help="The job's id, as vsp jobs dead shows it.", show_default=False),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Replay every dead-lettered job.")] = False,
    as_json: AsJson = False,
) -> None:
    """Requeue a dead-lettered job with its attempts reset (fix what made it fail first).

    The dead letter is removed once the broker has confirmed the requeued job.
    """
    if (job_id is None) == (not every):
        raise typer.BadParameter("name one job id, or --all")
    replayed = _run(replay_dead(_settings(), None if every else job_id))
    if job_id is not None and not replayed:
        typer.echo(f"no dead-lettered job {job_id}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"replayed": replayed}))
    else:
        for replayed_id in replayed:
            typer.echo(f"replayed {replayed_id}")
        if not replayed:
            typer.echo("no dead-lettered jobs")
