"""Depth of the job queues as Prometheus gauges, for dashboards, alerts and autoscaling.

Every process holding a broker connection polls the queues with a passive declare, so depth is
on /metrics wherever a scrape lands; dashboards take ``max by (queue)`` across instances. The
``queue`` label is the queue's role (``jobs``, ``retry``, ``dead``), not its prefixed name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Gauge

from shared.core.tasks import cancel_and_wait
from shared.mq.broker import Broker

log = logging.getLogger(__name__)

QUEUE_MESSAGES = Gauge(
    "mq_queue_messages", "Messages ready in a transcode queue, by role.", ["queue"]
)
QUEUE_CONSUMERS = Gauge(
    "mq_queue_consumers", "Consumers attached to a transcode queue, by role.", ["queue"]
)


def queue_roles(broker: Broker) -> dict[str, list[str]]:
    """Queue names grouped by the role label they are reported under."""
    topo = broker.topology
    retries = [topo.retry_queue(i) for i in range(1, len(topo.retry_delays_seconds) + 1)]
    return {"jobs": [topo.jobs_queue], "retry": retries, "dead": [topo.dead_queue]}


async def sample_depth(broker: Broker) -> dict[str, tuple[int, int]]:
    """(messages, consumers) per role, read with passive declares on a short-lived channel."""
    channel = await broker.open_channel()
    try:
        depth: dict[str, tuple[int, int]] = {}
        for role, names in queue_roles(broker).items():
            messages = consumers = 0
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                messages += result.message_count or 0
                consumers += result.consumer_count or 0
            depth[role] = (messages, consumers)
        return depth
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


class QueueDepthMonitor:
    """Refreshes the queue gauges every ``interval_seconds`` until stopped."""

    def __init__(self, broker: Broker, interval_seconds: float = 5.0) -> None:
        self.broker = broker
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin polling in the background."""
        self._task = asyncio.create_task(self._run(), name="queue-depth")

    async def stop(self) -> None:
        """Stop polling."""
        await cancel_and_wait(self._task)
        self._task = None

    async def refresh(self) -> None:
        """Sample once and set the gauges."""
        for role, (messages, consumers) in (await sample_depth(self.broker)).items():
            QUEUE_MESSAGES.labels(role).set(messages)
            QUEUE_CONSUMERS.labels(role).set(consumers)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # stop() asked
                # aiormq cancels a channel's pending calls when its connection closes.
                log.debug("sampling queue depth was cut off by a closing connection")
            except Exception as exc:
                # A broker outage must not end the loop: the gauges resume when it returns.
                log.debug("sampling queue depth failed: %s", exc)
            await asyncio.sleep(self.interval_seconds)
