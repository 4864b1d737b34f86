"""A robust connection, a confirming publisher, and the declared topology."""

from __future__ import annotations

import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.mq.messages import PurgeJob, TranscodeJob, VideoEvent
from shared.mq.topology import JOB_ROUTING_KEY, Declared, Topology, declare

log = logging.getLogger(__name__)


def _job_message(
    job: TranscodeJob | PurgeJob, *, failure_reason: str | None = None
) -> aio_pika.Message:
    """A persistent JSON message carrying ``job``, identified by its job id."""
    return aio_pika.Message(
        job.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(job.job_id),
        type=job.type,
        headers=None if failure_reason is None else {"x-failure-reason": failure_reason[:1000]},
    )


class Broker:
    """Owns one connection and a publisher-confirm channel for the process."""

    def __init__(self, url: str, topology: Topology, *, heartbeat_seconds: int = 30) -> None:
        self.url = url
        self.topology = topology
        self.heartbeat_seconds = heartbeat_seconds
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: Declared | None = None

    async def connect(self) -> None:
        """Connect (reconnecting automatically later) and declare the topology."""
        self._connection = await aio_pika.connect_robust(
            self.url, heartbeat=self.heartbeat_seconds, client_properties={"connection_name": "vsp"}
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._declared = await declare(self._channel, self.topology)

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker is not connected")
        return self._connection

    @property
    def declared(self) -> Declared:
        if self._declared is None:
            raise RuntimeError("broker is not connected")
        return self._declared

    async def publish_job(self, job: TranscodeJob | PurgeJob, *, retry_level: int = 0) -> None:
        """Publish a persistent job and wait for the broker's confirm."""
        message = _job_message(job)
        if retry_level:
            await self.declared.retry.publish(message, routing_key=str(retry_level))
        else:
            await self.declared.jobs.publish(message, routing_key=JOB_ROUTING_KEY)

    async def publish_dead(self, job: TranscodeJob | PurgeJob, reason: str) -> None:
        """Send a job that exhausted its attempts to the dead-letter queue, with the reason."""
        message = _job_message(job, failure_reason=reason)
        await self.declared.dead.publish(message, routing_key=JOB_ROUTING_KEY)

    async def publish_event(self, event: VideoEvent) -> None:
        """Publish a video event (transient: listeners that are away miss nothing durable)."""
        message = aio_pika.Message(
            event.model_dump_json().encode(), content_type="application/json"
        )
        await self.declared.events.publish(message, routing_key=event.type)

    async def check(self) -> None:
        """Raise if the connection is down."""
        if self._connection is None or self._connection.is_closed:
            raise ConnectionError("AMQP connection is closed")

    async def close(self) -> None:
        """Close the channel and connection."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
