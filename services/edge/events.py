"""Warming on ``video.ready``: each edge listens on its own temporary queue."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage

from services.edge.service import Edge
from shared.core.errors import AppError
from shared.mq.broker import Broker
from shared.mq.messages import VideoEvent

log = logging.getLogger(__name__)


def master_key(event: VideoEvent) -> str:
    """Where the transcoder stores a ready video's master playlist."""
    return f"videos/{event.video_id}/hls/master.m3u8"


async def listen_for_ready(edge: Edge, broker: Broker) -> None:
    """Bind an exclusive, auto-deleted queue to video.ready and warm each announced video."""
    channel = await broker.connection.channel()
    await channel.set_qos(prefetch_count=4)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(broker.declared.events.name, "video.ready")

    async def on_message(message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=False):
            try:
                event = VideoEvent.model_validate_json(message.body)
            except ValueError:
                log.warning("ignoring a malformed video event")
                return
            try:
                stored = await edge.warm(master_key(event))
                log.info("warmed video %s: %d objects", event.video_id, stored)
            except AppError as exc:
                log.warning("could not warm video %s: %s", event.video_id, exc.detail)

    await queue.consume(on_message)
