"""Transcoding worker: push (basic_consume, prefetch 1) or pull (basic_get with backoff).

A message is acked only after its outputs are stored and the row is committed. A failure is
retried through the delay queues with growing waits; after the attempts cap the video is marked
failed and the message goes to the dead-letter queue with the reason. A failure that would
repeat (a source refused by the limits, an encode over its time budget) skips the retries. The
reason the video shows is a short public one; the full error, ffmpeg's output included, is
logged with the video's id. SIGTERM hands the current job back (nack with requeue) so another
worker takes it at once; SIGKILL loses nothing either, since the broker redelivers unacked
messages.

The broker may drop the worker's channel at any time: a broker restart, or its consumer timeout
firing on a job that runs longer. Messages come in on a plain channel that only this loop
reopens, once the connection is back, and never while a job runs. The job in hand runs to its
end and records its outcome; the ack it can no longer send is dropped, and the broker delivers
the message again. That copy, like any copy of a job whose outcome is already ``succeeded``, is
acked without running, and the video's lease keeps two copies from running at once. A message
the broker has delivered ``delivery_limit`` times without an ack (its worker crashed, hung or
was stopped each time) is buried with a reason on that last delivery; the broker's own limit
dead-letters it should even that delivery die.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from prometheus_client import start_http_server
from pydantic import ValidationError

from services.transcoder import service
from services.transcoder.metrics import (
    BUSY,
    CHANNELS_LOST,
    JOBS,
    QUEUE_WAIT,
    REALTIME_FACTOR,
    TRANSCODE_SECONDS,
)
from services.transcoder.settings import Settings
from shared.core.logging import configure_logging
from shared.db.repositories import JobRepository
from shared.mq.messages import JOB_ADAPTER, PurgeJob, TranscodeJob
from shared.mq.topology import deliveries_before
from shared.runtime.resources import Resources, close_resources, open_resources

log = logging.getLogger(__name__)

# What a lost channel or connection raises; the worker reopens its channel and goes on.
CHANNEL_LOST = (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError)

# A handler returns how the job ended: "succeeded", "skipped" when there was nothing to do, or
# "deferred" when the job is not due yet and waits in a retry queue.
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
    assert isinstance(job, PurgeJob)
    if job.prefix is None:
        await res.need_store().delete_prefix(f"videos/{job.video_id}/")
        return "succeeded"
    wait = job.not_before - time.time()
    if wait > 0:
        await _defer(res, job, wait)
        return "deferred"
    return "succeeded" if await service.purge_run(res, job) else "skipped"


async def _defer(res: Resources, job: PurgeJob, wait_seconds: float) -> None:
    """Send a job that is not due yet through a retry queue; it comes back until it is due.

    Published (confirmed) before the delivery in hand is acked: a worker dying in between
    leaves two copies, and the purge is idempotent.
    """
    broker = res.need_broker()
    level = broker.topology.delay_level(wait_seconds)
    delay = broker.topology.retry_delays_seconds[level - 1]
    later = job.model_copy(update={"published_at": time.time() + delay})
    await broker.publish_job(later, retry_level=level)
    log.info("job %s is due in %.0f s; waiting in retry level %d", job.job_id, wait_seconds, level)


HANDLERS: dict[str, Handler] = {"transcode": _handle_transcode, "purge": _handle_purge}


class ChannelClosed(ConnectionError):
    """The broker closed the channel the worker takes messages on."""


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
            await self._settle(message.reject(requeue=False), message, "reject")
            JOBS.labels(self.mode, "malformed").inc()
            return
        if await self._succeeded_before(job):
            # A copy whose first ack was lost with its channel: the work is done and recorded.
            log.info("job %s already succeeded; acking its copy", job.job_id)
            await self._settle(message.ack(), message, "ack")
            JOBS.labels(self.mode, "duplicate").inc()
            return
        deliveries = deliveries_before(message.headers)
        if deliveries >= self.res.need_broker().topology.delivery_limit:
            reason = f"transcoding failed: its worker stopped {deliveries} times on this job"
            log.error("job %s was delivered %d times without an ack", job.job_id, deliveries + 1)
            await self._retry_or_bury(message, job, service.Failure(reason, permanent=True))
            return
        QUEUE_WAIT.labels(self.mode).observe(max(0.0, time.time() - job.published_at))
        log.info(
            "job %s (%s, video %s, attempt %d) started, delivery %d",
            job.job_id,
            job.type,
            job.video_id,
            job.attempt,
            deliveries + 1,
        )
        BUSY.labels(self.mode).set(1)
        await self._record(job, "started")
        timeout = await self._timeout_of(job)
        handler = HANDLERS[job.type]
        self.current = asyncio.create_task(handler(self.res, self.settings, job))
        try:
            ended = await asyncio.wait_for(asyncio.shield(self.current), timeout)
        except asyncio.CancelledError:
            # SIGTERM: hand the job back so another worker takes it now.
            self.current.cancel()
            with contextlib.suppress(BaseException):
                await self.current
            if isinstance(job, TranscodeJob):
                await service.requeue_video(self.res, job.video_id)
            await self._settle(message.nack(requeue=True), message, "hand back")
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
            # Recorded before the ack: a copy delivered after a lost ack is then skipped.
            await self._record(job, ended)
            await self._settle(message.ack(), message, "ack")
            JOBS.labels(self.mode, ended).inc()
            log.info("job %s done (%s)", job.job_id, ended)
        finally:
            self.current = None
            BUSY.labels(self.mode).set(0)

    async def _settle(
        self, settling: Awaitable[object], message: AbstractIncomingMessage, what: str
    ) -> None:
        """Ack, nack or reject; on a channel that is gone the broker redelivers instead."""
        try:
            await settling
        except CHANNEL_LOST as exc:
            log.warning(
                "could not %s message %s, its channel is gone (%r); the broker delivers it again",
                what,
                message.message_id,
                exc,
            )

    async def _succeeded_before(self, job: TranscodeJob | PurgeJob) -> bool:
        try:
            async with self.res.need_db().session() as session:
                return await JobRepository(session).succeeded(job.job_id)
        except Exception as exc:
            # The video's state and lease still keep the job from running twice.
            log.warning("job %s: could not read its record: %s", job.job_id, exc)
            return False

    async def _timeout_of(self, job: TranscodeJob | PurgeJob) -> float:
        if isinstance(job, TranscodeJob):
            try:
                return await service.job_timeout_seconds(self.res, self.settings, job)
            except Exception as exc:
                log.warning("job %s: could not size its timeout: %s", job.job_id, exc)
        return self.settings.transcoder_job_timeout_seconds

    async def _record(
        self, job: TranscodeJob | PurgeJob, event: str, *, error: str | None = None
    ) -> None:
        """Keep the job's outbox row in step with its run; bookkeeping never fails a job."""
        try:
            async with self.res.need_db().session() as session:
                jobs = JobRepository(session)
                if event == "started":
                    await jobs.started(job.job_id, worker_mode=self.mode, attempt=job.attempt)
                else:
                    await jobs.finished(job.job_id, event, error=error)
        except Exception as exc:
            log.warning("job %s: could not record %s: %s", job.job_id, event, exc)

    async def _retry_or_bury(
        self,
        message: AbstractIncomingMessage,
        job: TranscodeJob | PurgeJob,
        failure: service.Failure,
    ) -> None:
        try:
            await self._queue_retry_or_bury(job, failure)
        except Exception as exc:
            # The broker is away: hand the message back; its next delivery fails again.
            log.warning("job %s: could not queue its retry (%r); handing it back", job.job_id, exc)
            await self._settle(message.nack(requeue=True), message, "hand back")
            return
        await self._settle(message.ack(), message, "ack")

    async def _queue_retry_or_bury(
        self, job: TranscodeJob | PurgeJob, failure: service.Failure
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
            await self._record(job, "retried", error=reason)
            JOBS.labels(self.mode, "retried").inc()
        else:
            if isinstance(job, TranscodeJob):
                await service.fail_video(
                    self.res, job.video_id, reason, retranscode=job.retranscode
                )
            await broker.publish_dead(job, reason)
            log.error(
                "job %s failed %s: %s",
                job.job_id,
                "for good" if failure.permanent else f"after {job.attempt} attempts",
                reason,
            )
            await self._record(job, "failed", error=reason)
            JOBS.labels(self.mode, "failed").inc()

    async def run(self) -> None:
        """Take jobs until asked to stop, on a fresh channel whenever the last one was lost."""
        take = self._consume if self.mode == "push" else self._poll
        pause = self.settings.amqp_reconnect_seconds
        while not self.stopping.is_set():
            try:
                channel = await self._open_channel()
                try:
                    await take(channel)
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
            except CHANNEL_LOST as exc:
                CHANNELS_LOST.labels(self.mode).inc()
                log.warning("%s worker lost its channel (%r); reopening it", self.mode, exc)
                await self._unless_stopping(asyncio.sleep(pause))

    async def _open_channel(self) -> AbstractChannel:
        """A plain channel on the connection, once the connection is up."""
        broker = self.res.need_broker()
        await self._unless_stopping(broker.connection.connected.wait())
        channel = await broker.open_channel()
        channel.close_callbacks.add(self._closed_by_broker)
        return channel

    def _closed_by_broker(self, _channel: object, exc: BaseException | None) -> None:
        # Said at once: a running job only notices the lost channel when it ends.
        if isinstance(exc, AMQPError):
            log.warning("%s worker: the broker closed its channel: %s", self.mode, exc)

    async def _unless_stopping(self, waiting: Coroutine[Any, Any, object]) -> None:
        """Wait for ``waiting`` or for the stop request, whichever comes first."""
        task = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stop):
                pending.cancel()

    async def _consume(self, channel: AbstractChannel) -> None:
        """basic_consume with prefetch 1 until asked to stop or the channel is lost."""
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(self.res.need_broker().topology.jobs_queue)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tag = await queue.consume(inbox.put)
        closed = asyncio.ensure_future(channel.closed())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                getter = asyncio.ensure_future(inbox.get())
                await asyncio.wait({getter, stop, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await self.process(getter.result())
                    continue
                getter.cancel()
                if closed.done():
                    raise ChannelClosed("the broker closed the channel")
        finally:
            closed.cancel()
            stop.cancel()
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            while not inbox.empty():
                message = inbox.get_nowait()
                await self._settle(message.nack(requeue=True), message, "hand back")

    async def _poll(self, channel: AbstractChannel) -> None:
        """basic_get polling, backing off while the queue is empty."""
        queue = await channel.get_queue(self.res.need_broker().topology.jobs_queue)
        timeout = self.res.need_broker().publish_timeout_seconds
        delay = self.settings.transcoder_poll_min_seconds
        while not self.stopping.is_set():
            message = await queue.get(no_ack=False, fail=False, timeout=timeout)
            if message is None:
                await self._unless_stopping(asyncio.sleep(delay))
                delay = min(delay * 2, self.settings.transcoder_poll_max_seconds)
                continue
            delay = self.settings.transcoder_poll_min_seconds
            await self.process(message)


async def main(settings: Settings) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    res = await open_resources(settings, {"db", "redis", "mq", "storage"})
    worker = Worker(settings, res)
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(worker.run())

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
