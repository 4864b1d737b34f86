"""Transcoding worker: push (basic_consume, prefetch 1) or pull (basic_get with backoff).

A message is acked only after its outputs are stored and the row is committed. A failure is
retried through the delay queues with growing waits; after the attempts cap the video is marked
failed and the message goes to the dead-letter queue with the reason. A failure that would
repeat (a source refused by the limits, an encode over its time budget) skips the retries. The
reason the video shows is a short public one; the full error, ffmpeg's output included, is
logged with the video's id. SIGTERM hands the current job back (nack with requeue) so another
worker takes it at once; SIGKILL loses nothing either, since the broker redelivers unacked
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import start_http_server
from pydantic import ValidationError

from services.transcoder import service
from services.transcoder.metrics import BUSY, JOBS, QUEUE_WAIT, REALTIME_FACTOR, TRANSCODE_SECONDS
from services.transcoder.settings import Settings
from shared.core.logging import configure_logging
from shared.db.repositories import JobRepository
from shared.mq.messages import JOB_ADAPTER, PurgeJob, TranscodeJob
from shared.runtime.resources import Resources, close_resources, open_resources

log = logging.getLogger(__name__)

# A handler returns how the job ended: "succeeded", or "skipped" when there was nothing to do.
Handler = Callable[[Resources, Settings, "TranscodeJob | PurgeJob"], Coroutine[Any, Any, str]]


async def _handle_transcode(
    res: Resources, settings: Settings, job: TranscodeJob | PurgeJob
) -> str:
    assert isinstance(job, TranscodeJob)
    outcome = await service.transcode(res, settings, job)
    if outcome.skipped:
        return "skipped"
    if outcome.wall_seconds > 0:
        mode = settings.transcoder_mode
        TRANSCODE_SECONDS.labels(mode).observe(outcome.wall_seconds)
        REALTIME_FACTOR.labels(mode).observe(outcome.media_seconds / outcome.wall_seconds)
    return "succeeded"


async def _handle_purge(res: Resources, settings: Settings, job: TranscodeJob | PurgeJob) -> str:
    await res.need_store().delete_prefix(f"videos/{job.video_id}/")
    return "succeeded"


HANDLERS: dict[str, Handler] = {"transcode": _handle_transcode, "purge": _handle_purge}


class Worker:
    def __init__(self, settings: Settings, res: Resources) -> None:
        self.settings = settings
        self.res = res
        self.mode = settings.transcoder_mode
        self.stopping = asyncio.Event()
        self.current: asyncio.Task[str] | None = None
        self.handed_back = False

    async def process(self, message: AbstractIncomingMessage) -> None:
        """Run one delivery to its end: ack, retry, dead-letter, or hand back."""
        try:
            job = JOB_ADAPTER.validate_json(message.body)
        except ValidationError as exc:
            log.error("rejecting malformed message %s: %s", message.message_id, exc)
            await message.reject(requeue=False)
            JOBS.labels(self.mode, "malformed").inc()
            return
        QUEUE_WAIT.labels(self.mode).observe(max(0.0, time.time() - job.published_at))
        log.info(
            "job %s (%s, video %s, attempt %d) started",
            job.job_id,
            job.type,
            job.video_id,
            job.attempt,
        )
        BUSY.labels(self.mode).set(1)
        await self._record(job, "started")
        handler = HANDLERS[job.type]
        self.current = asyncio.create_task(handler(self.res, self.settings, job))
        try:
            ended = await asyncio.wait_for(
                asyncio.shield(self.current), self.settings.transcoder_job_timeout_seconds
            )
        except asyncio.CancelledError:
            # SIGTERM: hand the job back so another worker takes it now.
            self.current.cancel()
            with contextlib.suppress(BaseException):
                await self.current
            if isinstance(job, TranscodeJob):
                await service.requeue_video(self.res, job.video_id)
            await message.nack(requeue=True)
            await self._record(job, "handed_back")
            JOBS.labels(self.mode, "handed_back").inc()
            log.info("job %s handed back", job.job_id)
            raise
        except Exception as exc:
            if self.current is not None and not self.current.done():
                self.current.cancel()
                with contextlib.suppress(BaseException):
                    await self.current
            failure = service.failure_of(exc)
            log.warning(
                "job %s of video %s failed: %s",
                job.job_id,
                job.video_id,
                str(exc) or repr(exc),
                exc_info=exc if failure.reason == service.INTERNAL_ERROR else None,
            )
            await self._retry_or_bury(message, job, failure)
        else:
            await message.ack()
            await self._record(job, ended)
            JOBS.labels(self.mode, ended).inc()
            log.info("job %s done (%s)", job.job_id, ended)
        finally:
            self.current = None
            BUSY.labels(self.mode).set(0)

    async def _record(self, job: TranscodeJob | PurgeJob, event: str) -> None:
        """Keep the job's outbox row in step with its run; bookkeeping never fails a job."""
        try:
            async with self.res.need_db().session() as session:
                jobs = JobRepository(session)
                if event == "started":
                    await jobs.started(job.job_id, worker_mode=self.mode, attempt=job.attempt)
                else:
                    await jobs.finished(job.job_id, event)
        except Exception as exc:
            log.warning("job %s: could not record %s: %s", job.job_id, event, exc)

    async def _retry_or_bury(
        self,
        message: AbstractIncomingMessage,
        job: TranscodeJob | PurgeJob,
        failure: service.Failure,
    ) -> None:
        broker = self.res.need_broker()
        topo = broker.topology
        reason = failure.reason
        if job.attempt < topo.max_attempts and not failure.permanent:
            delay = topo.retry_delays_seconds[job.attempt - 1]
            # Queue wait counts from when the retry becomes due, not the deliberate delay.
            retry = job.model_copy(
                update={"attempt": job.attempt + 1, "published_at": time.time() + delay}
            )
            await broker.publish_job(retry, retry_level=job.attempt)
            log.warning(
                "job %s attempt %d failed (%s); retrying in %d s",
                job.job_id,
                job.attempt,
                reason,
                delay,
            )
            await self._record(job, "retried")
            JOBS.labels(self.mode, "retried").inc()
        else:
            if isinstance(job, TranscodeJob):
                await service.fail_video(self.res, job.video_id, reason)
            await broker.publish_dead(job, reason)
            log.error(
                "job %s failed %s: %s",
                job.job_id,
                "for good" if failure.permanent else f"after {job.attempt} attempts",
                reason,
            )
            await self._record(job, "failed")
            JOBS.labels(self.mode, "failed").inc()
        await message.ack()

    async def run_push(self) -> None:
        """basic_consume with prefetch 1 until asked to stop."""
        channel = await self.res.need_broker().connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(self.res.need_broker().topology.jobs_queue)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tag = await queue.consume(inbox.put)
        try:
            while not self.stopping.is_set():
                getter = asyncio.create_task(inbox.get())
                stop = asyncio.create_task(self.stopping.wait())
                done, _ = await asyncio.wait({getter, stop}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    stop.cancel()
                    await self.process(getter.result())
                else:
                    getter.cancel()
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            while not inbox.empty():
                await inbox.get_nowait().nack(requeue=True)
            await channel.close()

    async def run_pull(self) -> None:
        """basic_get polling, backing off while the queue is empty."""
        channel = await self.res.need_broker().connection.channel()
        queue = await channel.get_queue(self.res.need_broker().topology.jobs_queue)
        delay = self.settings.transcoder_poll_min_seconds
        try:
            while not self.stopping.is_set():
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), delay)
                    delay = min(delay * 2, self.settings.transcoder_poll_max_seconds)
                    continue
                delay = self.settings.transcoder_poll_min_seconds
                await self.process(message)
        finally:
            await channel.close()


async def main(settings: Settings) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    res = await open_resources(settings, {"db", "redis", "mq", "storage"})
    worker = Worker(settings, res)
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(
        worker.run_push() if settings.transcoder_mode == "push" else worker.run_pull()
    )

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received: stopping", sig.name)
        worker.stopping.set()
        if worker.current is not None:
            runner.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info(
        "%s worker consuming %s", settings.transcoder_mode, res.need_broker().topology.jobs_queue
    )
    try:
        await runner
    except asyncio.CancelledError:
        pass
    finally:
        await close_resources(res)
    log.info("worker stopped")


def run(settings: Settings | None = None) -> None:
    """Entry point for ``vsp worker``."""
    settings = settings or Settings()
    configure_logging(
        f"worker-{settings.transcoder_mode}", settings.log_level, json_lines=settings.log_json
    )
    if settings.transcoder_metrics_port:
        start_http_server(settings.transcoder_metrics_port, addr="0.0.0.0")
    asyncio.run(main(settings))
