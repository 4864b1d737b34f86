"""Every exchange and queue the platform uses, declared in one place.

- ``<p>.transcode`` (direct) -> queue ``<p>.transcode.jobs`` (durable; rejected messages
  dead-letter to ``<p>.transcode.dlx`` -> ``<p>.transcode.dead``).
- ``<p>.transcode.retry`` (direct) -> one queue per retry level with a fixed TTL; expired
  messages dead-letter back to ``<p>.transcode``. A queue per level avoids the head-of-line
  blocking that per-message TTLs have in a single queue.
- ``<p>.video.events`` (topic): video.uploaded, video.progress, video.ready, video.failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

JOB_ROUTING_KEY = "transcode"


@dataclass(frozen=True)
class Topology:
    prefix: str = "vsp"
    retry_delays_seconds: tuple[int, ...] = (2, 8, 32)

    @property
    def jobs_exchange(self) -> str:
        return f"{self.prefix}.transcode"

    @property
    def jobs_queue(self) -> str:
        return f"{self.prefix}.transcode.jobs"

    @property
    def retry_exchange(self) -> str:
        return f"{self.prefix}.transcode.retry"

    def retry_queue(self, level: int) -> str:
        """The queue holding messages for retry ``level`` (1-based)."""
        return f"{self.prefix}.transcode.retry.{level}"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.transcode.dlx"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.transcode.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.video.events"

    @property
    def max_attempts(self) -> int:
        """First try plus one per retry level."""
        return len(self.retry_delays_seconds) + 1


@dataclass
class Declared:
    jobs: AbstractExchange
    retry: AbstractExchange
    dead: AbstractExchange
    events: AbstractExchange
    jobs_queue: AbstractQueue
    dead_queue: AbstractQueue


async def declare(channel: AbstractChannel, topo: Topology) -> Declared:
    """Declare (idempotently) every exchange, queue and binding."""
    durable = aio_pika.ExchangeType.DIRECT
    jobs = await channel.declare_exchange(topo.jobs_exchange, durable, durable=True)
    retry = await channel.declare_exchange(topo.retry_exchange, durable, durable=True)
    dead = await channel.declare_exchange(topo.dead_exchange, durable, durable=True)
    events = await channel.declare_exchange(
        topo.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    jobs_queue = await channel.declare_queue(
        topo.jobs_queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": topo.dead_exchange,
            "x-dead-letter-routing-key": JOB_ROUTING_KEY,
        },
    )
    await jobs_queue.bind(jobs, JOB_ROUTING_KEY)
    dead_queue = await channel.declare_queue(topo.dead_queue, durable=True)
    await dead_queue.bind(dead, JOB_ROUTING_KEY)
    for level, delay in enumerate(topo.retry_delays_seconds, start=1):
        queue = await channel.declare_queue(
            topo.retry_queue(level),
            durable=True,
            arguments={
                "x-message-ttl": delay * 1000,
                "x-dead-letter-exchange": topo.jobs_exchange,
                "x-dead-letter-routing-key": JOB_ROUTING_KEY,
            },
        )
        await queue.bind(retry, str(level))
    return Declared(jobs, retry, dead, events, jobs_queue, dead_queue)
