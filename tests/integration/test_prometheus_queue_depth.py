"""Queue depth gauges read from the real broker, on a topology of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from shared.core.settings import BaseServiceSettings
from shared.mq.broker import Broker
from shared.mq.depth import QueueDepthMonitor, sample_depth
from shared.mq.messages import TranscodeJob
from shared.mq.topology import Topology
from tests.support.polling import eventually


def gauge(name: str, queue: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"queue": queue})


def new_job() -> TranscodeJob:
    return TranscodeJob(job_id=uuid.uuid4(), video_id=uuid.uuid4(), source_key="k")


@pytest.fixture
async def broker(settings: BaseServiceSettings) -> AsyncIterator[Broker]:
    # Retry delays far longer than a test: a message published to a retry queue stays there
    # (it would move to the jobs queue when its delay ran out) whatever the machine's pace.
    topo = Topology(f"depth{uuid.uuid4().hex[:8]}", (300, 600))
    broker = Broker(settings.amqp_url, topo)
    await broker.connect()
    yield broker
    channel = await broker.connection.channel()
    for name in [topo.jobs_queue, topo.dead_queue, topo.retry_queue(1), topo.retry_queue(2)]:
        await channel.queue_delete(name)
    for name in (topo.jobs_exchange, topo.retry_exchange, topo.dead_exchange, topo.events_exchange):
        await channel.exchange_delete(name)
    await broker.close()


async def test_depth_counts_ready_messages_and_consumers(broker: Broker) -> None:
    assert await sample_depth(broker) == {"jobs": (0, 0), "retry": (0, 0), "dead": (0, 0)}
    for _ in range(3):
        await broker.publish_job(new_job())
    await broker.publish_dead(new_job(), "gave up")
    await broker.publish_job(new_job(), retry_level=2)
    assert await sample_depth(broker) == {"jobs": (3, 0), "retry": (1, 0), "dead": (1, 0)}

    channel = await broker.connection.channel()
    await channel.set_qos(prefetch_count=1)
    queue = await channel.get_queue(broker.topology.jobs_queue)
    delivered = asyncio.Event()

    async def hold(message: AbstractIncomingMessage) -> None:
        delivered.set()

    tag = await queue.consume(hold)
    await asyncio.wait_for(delivered.wait(), 10)
    # One job is out with the consumer (prefetch 1), two are still ready.
    monitor = QueueDepthMonitor(broker)
    await monitor.refresh()
    assert gauge("mq_queue_messages", "jobs") == 2
    assert gauge("mq_queue_consumers", "jobs") == 1
    assert gauge("mq_queue_messages", "retry") == 1
    assert gauge("mq_queue_messages", "dead") == 1
    await queue.cancel(tag)
    await channel.close()


async def test_monitor_polls_until_stopped_and_survives_a_closed_connection(
    broker: Broker,
) -> None:
    monitor = QueueDepthMonitor(broker, interval_seconds=0.05)
    refreshes = {"ok": 0, "failed": 0}
    refresh = monitor.refresh

    async def counted() -> None:
        try:
            await refresh()
        except BaseException:
            refreshes["failed"] += 1
            raise
        refreshes["ok"] += 1

    monitor.refresh = counted  # type: ignore[method-assign]

    async def until(what: str, predicate: Callable[[], bool]) -> None:
        async def check() -> bool:
            return predicate()

        await eventually(check, within=30, what=f"{what} ({refreshes})")

    monitor.start()
    # It keeps polling: several refreshes, not one.
    await until("three refreshes", lambda: refreshes["ok"] >= 3)
    assert monitor._task is not None and not monitor._task.done()
    await broker.connection.close()
    # Refreshes fail while the connection is closed, and the loop goes on past each failure.
    await until("three failed refreshes", lambda: refreshes["failed"] >= 3)
    assert not monitor._task.done()
    await monitor.stop()
    assert monitor._task is None
    await broker.connect()
