"""Video events an edge acts on: ``video.deleted`` purges the video's objects from every cache
tier; ``video.ready`` warms the cache, when warming is on, from the master playlist the event
names (the transcoder writes each run under a prefix of its own).

Each edge reads its own queue, named after the edge and its cache folder. The queue outlives
the edge's connection by ``EDGE_EVENTS_QUEUE_EXPIRES_SECONDS``: an edge that was restarting
while a video was deleted finds the event waiting and purges its disk cache, which survived the
restart, instead of serving the deleted video from it.

The broker is not needed to serve: ``EventFollower`` connects in the background, retrying with
backoff, so an edge starts and serves its cache while RabbitMQ is down and reads the waiting
events once it is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from aio_pika.abc import AbstractIncomingMessage

from services.edge.service import Edge
from shared.core.errors import AppError
from shared.core.tasks import cancel_and_wait
from shared.mq.broker import Broker
from shared.mq.messages import VideoEvent

log = logging.getLogger(__name__)


def video_prefix(event: VideoEvent) -> str:
    """The prefix of every object of the event's video."""
    return f"videos/{event.video_id}/"


def queue_name(edge: Edge, prefix: str) -> str:
    """The edge's queue: one per cache folder, so a restarted edge reads the same queue.

    The expiry is part of the name because the broker refuses to declare a queue again with
    other arguments: a changed setting starts a new queue and the old one expires.
    """
    settings = edge.settings
    identity = f"{settings.edge_cache_dir.resolve()}\n{settings.edge_events_queue_expires_seconds}"
    return f"{prefix}.edge.{edge.edge_id}.{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


async def on_event(edge: Edge, event: VideoEvent) -> None:
    """Purge a deleted video; warm a ready one."""
    if event.type == "video.deleted":
        purged = await edge.purge([], [video_prefix(event)])
        log.info("purged deleted video %s: %d objects", event.video_id, purged)
        return
    if event.master_key is None:
        # Published by a transcoder older than the field: nothing says which run to warm.
        log.info("video.ready for %s names no master playlist; not warming", event.video_id)
        return
    try:
        stored = await edge.warm(event.master_key)
        log.info("warmed video %s: %d objects", event.video_id, stored)
    except AppError as exc:
        log.warning("could not warm video %s: %s", event.video_id, exc.detail)


async def listen(edge: Edge, broker: Broker) -> None:
    """Bind the edge's queue to ``video.deleted`` (and ``video.ready`` when warming) and
    consume it."""
    settings = edge.settings
    channel = await broker.connection.channel()
    await channel.set_qos(prefetch_count=4)
    queue = await channel.declare_queue(
        queue_name(edge, broker.topology.prefix),
        durable=True,
        arguments={"x-expires": settings.edge_events_queue_expires_seconds * 1000},
    )
    await queue.bind(broker.declared.events.name, "video.deleted")
    if settings.edge_warm_on_ready:
        await queue.bind(broker.declared.events.name, "video.ready")
    else:
        await queue.unbind(broker.declared.events.name, "video.ready")

    async def on_message(message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=False):
            try:
                event = VideoEvent.model_validate_json(message.body)
            except ValueError:
                log.warning("ignoring a malformed video event")
                return
            await on_event(edge, event)

    await queue.consume(on_message)


class EventFollower:
    """Connects ``broker`` and listens in the background until it succeeds, then leaves the
    robust connection to restore the channel, queue and consumer after any later outage."""

    def __init__(self, edge: Edge, broker: Broker, *, max_delay_seconds: float = 30) -> None:
        self.edge = edge
        self.broker = broker
        self.max_delay_seconds = max_delay_seconds
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _follow(self) -> None:
        delay = self.broker.reconnect_seconds
        while True:
            try:
                await self.broker.connect()
                await listen(self.edge, self.broker)
            except Exception as exc:
                log.warning(
                    "video events: the broker is unreachable (%s); cached objects are served, "
                    "deletions are purged once it is back; retrying in %.0f s",
                    str(exc) or type(exc).__name__,
                    delay,
                )
                await self.broker.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay_seconds)
                continue
            self.listening.set()
            log.info("video events: listening")
            return

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="edge-events")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.broker.close()
