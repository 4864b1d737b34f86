"""A robust connection, a confirming publisher, and the declared topology.

The connection comes back by itself after a broker restart (an attempt every
``reconnect_seconds``) and restores the publishing channel with its exchanges and queues.
Every publish is bounded by ``publish_timeout_seconds``, confirm included: a broker that is
away or hangs fails the publish instead of holding its caller (the outbox holds row locks
meanwhile). Jobs are published ``mandatory``: one the broker cannot route, because its queue is
missing, raises ``Unroutable`` instead of vanishing.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import PublishError

from shared.core.settings import BaseServiceSettings
from shared.mq.messages import PurgeJob, TranscodeJob, VideoEvent
from shared.mq.topology import JOB_ROUTING_KEY, Declared, Topology, declare, retire_legacy

log = logging.getLogger(__name__)


class Unroutable(RuntimeError):
    """The broker returned a mandatory message: no queue is bound for it."""


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

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        heartbeat_seconds: int = 30,
        reconnect_seconds: float = 2.0,
        publish_timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.topology = topology
        self.heartbeat_seconds = heartbeat_seconds
        self.reconnect_seconds = reconnect_seconds
        self.publish_timeout_seconds = publish_timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: Declared | None = None

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> Broker:
        """The broker and topology the settings name."""
        topology = Topology(
            settings.mq_prefix, settings.mq_retry_delays_seconds, settings.mq_delivery_limit
        )
        return cls(
            settings.amqp_url,
            topology,
            heartbeat_seconds=settings.amqp_heartbeat_seconds,
            reconnect_seconds=settings.amqp_reconnect_seconds,
            publish_timeout_seconds=settings.amqp_publish_timeout_seconds,
        )

    async def connect(self) -> None:
        """Connect (reconnecting automatically later) and declare the topology."""
        self._connection = await aio_pika.connect_robust(
            self.url,
            heartbeat=self.heartbeat_seconds,
            reconnect_interval=self.reconnect_seconds,
            client_properties={"connection_name": "vsp"},
        )
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._declared = await declare(self._channel, self.topology)
        try:
            await retire_legacy(self._connection, self.topology)
        except Exception:
            # What it did not move stays in the classic queue; the next start moves it.
            log.exception("could not retire %s", self.topology.legacy_jobs_queue)

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("broker is not connected")
        return self._connection

    async def open_channel(self) -> AbstractChannel:
        """A plain channel: nothing reopens it behind its owner, who handles its loss."""
        channel = aio_pika.Channel(self.connection)
        async with asyncio.timeout(self.publish_timeout_seconds):
            await channel.initialize()
        return channel

    @property
    def declared(self) -> Declared:
        if self._declared is None:
            raise RuntimeError("broker is not connected")
        return self._declared

    async def _publish(
        self,
        exchange: AbstractExchange,
        message: aio_pika.Message,
        routing_key: str,
        *,
        mandatory: bool = True,
    ) -> None:
        try:
            async with asyncio.timeout(self.publish_timeout_seconds):
                await exchange.publish(message, routing_key=routing_key, mandatory=mandatory)
        except PublishError as exc:
            raise Unroutable(
                f"the broker returned {message.message_id}: no queue is bound to "
                f"{exchange.name} for {routing_key!r}"
            ) from exc

    async def publish_job(self, job: TranscodeJob | PurgeJob, *, retry_level: int = 0) -> None:
        """Publish a persistent job and wait for the broker's confirm."""
        message = _job_message(job)
        if retry_level:
            await self._publish(self.declared.retry, message, str(retry_level))
        else:
            await self._publish(self.declared.jobs, message, JOB_ROUTING_KEY)

    async def publish_dead(self, job: TranscodeJob | PurgeJob, reason: str) -> None:
        """Send a job that exhausted its attempts to the dead-letter queue, with the reason."""
        message = _job_message(job, failure_reason=reason)
        await self._publish(self.declared.dead, message, JOB_ROUTING_KEY)

    async def publish_event(self, event: VideoEvent) -> None:
        """Publish a video event (transient: listeners that are away miss nothing durable)."""
        message = aio_pika.Message(
            event.model_dump_json().encode(), content_type="application/json"
        )
        # Not mandatory: an event nobody listens to is not an error.
        await self._publish(self.declared.events, message, event.type, mandatory=False)

    async def check(self) -> None:
        """Raise if the broker is unreachable (the connection may be reconnecting)."""
        connection, channel = self._connection, self._channel
        if connection is None or connection.is_closed or not connection.connected.is_set():
            raise ConnectionError("AMQP connection is down")
        if channel is None or channel.is_closed:
            raise ConnectionError("AMQP channel is closed")

    async def close(self) -> None:
        """Close the channel and connection."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
