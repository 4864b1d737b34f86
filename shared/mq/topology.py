"""Every exchange and queue the platform uses, declared in one place.

- ``<p>.transcode`` (direct) -> quorum queue ``<p>.transcode.jobs.quorum``. A message delivered
  ``delivery_limit`` times without an ack (its worker died, hung past the broker's consumer
  timeout, or was stopped) is dead-lettered to ``<p>.transcode.dlx`` -> ``<p>.transcode.dead``
  by the broker; workers bury it themselves on its last delivery, with a reason.
- ``<p>.transcode.retry`` (direct) -> one queue per retry level with a fixed TTL; expired
  messages dead-letter back to ``<p>.transcode``. A queue per level avoids the head-of-line
  blocking that per-message TTLs have in a single queue.
- ``<p>.video.events`` (topic): video.uploaded, video.progress, video.ready, video.failed.

A queue cannot change its type in place, so the quorum queue has a name of its own; the classic
``<p>.transcode.jobs`` of earlier versions is unbound and drained into it (``retire_legacy``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from aio_pika.exceptions import ChannelClosed

log = logging.getLogger(__name__)

JOB_ROUTING_KEY = "transcode"
DELIVERY_COUNT = "x-delivery-count"


@dataclass(frozen=True)
class Topology:
    prefix: str = "vsp"
    retry_delays_seconds: tuple[int, ...] = (2, 8, 32)
    delivery_limit: int = 5

    @property
    def jobs_exchange(self) -> str:
        return f"{self.prefix}.transcode"

    @property
    def jobs_queue(self) -> str:
        return f"{self.prefix}.transcode.jobs.quorum"

    @property
    def legacy_jobs_queue(self) -> str:
        """The classic jobs queue of versions before the quorum queue."""
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

    def delay_level(self, seconds: float) -> int:
        """The retry level that holds a job for at most ``seconds`` (its longest such delay;
        the shortest level when every delay is longer): a job waiting for a time hops through
        the retry queues until it is due."""
        fitting = [
            level
            for level, delay in enumerate(self.retry_delays_seconds, start=1)
            if delay <= seconds
        ]
        if fitting:
            return max(fitting, key=lambda level: self.retry_delays_seconds[level - 1])
        return min(
            range(1, len(self.retry_delays_seconds) + 1),
            key=lambda level: self.retry_delays_seconds[level - 1],
        )


@dataclass
class Declared:
    jobs: AbstractExchange
    retry: AbstractExchange
    dead: AbstractExchange
    events: AbstractExchange
    jobs_queue: AbstractQueue
    dead_queue: AbstractQueue


def deliveries_before(headers: Mapping[str, object] | None) -> int:
    """How many times the broker delivered a message before without an ack (quorum queues)."""
    count = (headers or {}).get(DELIVERY_COUNT)
    return count if isinstance(count, int) else 0


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
            "x-queue-type": "quorum",
            "x-delivery-limit": topo.delivery_limit,
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


async def retire_legacy(connection: AbstractConnection, topo: Topology) -> int:
    """Move the jobs an earlier version's classic queue holds into the quorum queue.

    The classic queue is unbound first, so nothing new reaches it; its messages are republished
    to the jobs exchange (confirmed) before each is acked, and it is deleted once empty and
    unused. Several processes may do this at once; a message whose ack is lost moves twice,
    and workers skip the copy as they skip any copy of a job. Returns how many this process
    moved.
    """
    # Plain channels: a missing queue closes the channel, and nothing should reopen it.
    probe = aio_pika.Channel(connection, publisher_confirms=False)
    await probe.initialize()
    try:
        await probe.declare_queue(topo.legacy_jobs_queue, passive=True)
    except ChannelClosed:
        return 0  # the usual case: there is none
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
    mover = aio_pika.Channel(connection, on_return_raises=True)
    await mover.initialize()
    try:
        legacy = await mover.get_queue(topo.legacy_jobs_queue)
        await legacy.unbind(topo.jobs_exchange, JOB_ROUTING_KEY)
        jobs = await mover.get_exchange(topo.jobs_exchange)
        moved = 0
        while (message := await legacy.get(no_ack=False, fail=False)) is not None:
            await jobs.publish(
                aio_pika.Message(
                    message.body,
                    headers=message.headers,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    type=message.type,
                ),
                routing_key=JOB_ROUTING_KEY,
                mandatory=True,
            )
            await message.ack()
            moved += 1
        if moved:
            log.warning(
                "moved %d job(s) from the classic queue %s to the quorum queue %s",
                moved,
                topo.legacy_jobs_queue,
                topo.jobs_queue,
            )
        with contextlib.suppress(ChannelClosed):
            # Refused while an older worker still consumes it; the next start tries again.
            await mover.queue_delete(topo.legacy_jobs_queue, if_unused=True, if_empty=True)
            log.warning("deleted the classic queue %s", topo.legacy_jobs_queue)
        return moved
    finally:
        with contextlib.suppress(Exception):
            await mover.close()
