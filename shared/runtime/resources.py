"""The long-lived clients a process owns, opened once and closed once."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.core.settings import BaseServiceSettings
from shared.core.signing import Signer
from shared.db.engine import Database
from shared.mq.broker import Broker
from shared.mq.depth import QueueDepthMonitor
from shared.mq.outbox import OutboxRelay
from shared.runtime.pubsub import PubSubHub
from shared.storage import ObjectStore, create_store

log = logging.getLogger(__name__)

ALL = frozenset({"db", "redis", "mq", "storage", "http"})


@dataclass
class Resources:
    """Clients of one process. Fields the process did not ask for stay ``None``."""

    settings: BaseServiceSettings
    db: Database | None = None
    redis: Redis | None = None
    # The one Redis subscriber, fanned out to every live-progress stream of the process.
    pubsub: PubSubHub | None = None
    broker: Broker | None = None
    store: ObjectStore | None = None
    http: httpx.AsyncClient | None = None
    # The relay of a process that queues jobs; it kicks the relay after each commit.
    outbox: OutboxRelay | None = None
    queue_depth: QueueDepthMonitor | None = None

    @functools.cached_property
    def signer(self) -> Signer:
        """The process's one signer, built from its settings on first use."""
        return Signer.from_settings(self.settings)

    def need_db(self) -> Database:
        if self.db is None:
            raise RuntimeError("this process has no database")
        return self.db

    def need_redis(self) -> Redis:
        if self.redis is None:
            raise RuntimeError("this process has no Redis")
        return self.redis

    def need_pubsub(self) -> PubSubHub:
        if self.pubsub is None:
            raise RuntimeError("this process has no Redis subscriber")
        return self.pubsub

    def need_broker(self) -> Broker:
        if self.broker is None:
            raise RuntimeError("this process has no broker")
        return self.broker

    def need_store(self) -> ObjectStore:
        if self.store is None:
            raise RuntimeError("this process has no object store")
        return self.store

    def need_http(self) -> httpx.AsyncClient:
        if self.http is None:
            raise RuntimeError("this process has no HTTP client")
        return self.http

    def need_outbox(self) -> OutboxRelay:
        if self.outbox is None:
            raise RuntimeError("this process has no outbox relay")
        return self.outbox


def redis_from_settings(settings: BaseServiceSettings) -> Redis:
    """A client on a bounded pool that retries lost connections and timeouts with backoff.

    A command on a connection that a Redis restart closed is sent again on a new one, instead
    of failing the request that drew it.
    """
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=2), settings.redis_retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=settings.redis_health_check_interval_seconds,
    )
    return Redis.from_pool(pool)


def store_from_settings(settings: BaseServiceSettings) -> ObjectStore:
    """The object store the settings describe."""
    return create_store(
        settings.storage_backend,
        root=settings.storage_root,
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        bucket=settings.s3_bucket,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


async def open_resources(
    settings: BaseServiceSettings, uses: frozenset[str] | set[str]
) -> Resources:
    """Open the clients named in ``uses`` (a subset of db, redis, mq, storage, http)."""
    unknown = set(uses) - ALL
    if unknown:
        raise ValueError(f"unknown resources: {sorted(unknown)}")
    res = Resources(settings)
    try:
        if "db" in uses:
            res.db = Database.from_settings(settings)
        if "redis" in uses:
            res.redis = redis_from_settings(settings)
            res.pubsub = PubSubHub(res.redis, queue_messages=settings.events_queue_messages)
        if "storage" in uses:
            res.store = store_from_settings(settings)
        if "http" in uses:
            res.http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=2.0),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            )
        if "mq" in uses:
            res.broker = Broker.from_settings(settings)
            await res.broker.connect()
            res.queue_depth = QueueDepthMonitor(res.broker)
            res.queue_depth.start()
    except BaseException:
        await close_resources(res)
        raise
    return res


async def close_resources(res: Resources) -> None:
    """Close whatever was opened, in reverse order, logging (not raising) failures."""
    monitor, res.queue_depth = res.queue_depth, None
    if monitor is not None:
        await monitor.stop()
    for name, closer in (
        ("broker", res.broker.close if res.broker else None),
        ("http", res.http.aclose if res.http else None),
        ("store", res.store.close if res.store else None),
        ("pubsub", res.pubsub.close if res.pubsub else None),
        ("redis", res.redis.aclose if res.redis else None),
        ("db", res.db.close if res.db else None),
    ):
        if closer is None:
            continue
        try:
            await closer()
        except Exception:
            log.exception("closing %s failed", name)


async def readiness(res: Resources) -> dict[str, str]:
    """Check every opened client at once; values are "ok" or "down".

    A check slower than ``readiness_timeout_seconds`` is "down": a dependency that hangs must
    not hang ``/readyz``. ``/readyz`` is reachable from outside, so the error itself (hosts,
    ports, credentials in a URL) goes to the log, not into the answer.
    """
    probes: dict[str, Callable[[], Awaitable[object]]] = {}
    if res.db:
        probes["database"] = res.db.ping
    if res.redis:
        probes["redis"] = res.redis.ping
    if res.broker:
        probes["rabbitmq"] = res.broker.check
    if res.store:
        probes["storage"] = res.store.check
    timeout = res.settings.readiness_timeout_seconds

    async def run(name: str, probe: Callable[[], Awaitable[object]]) -> str:
        try:
            async with asyncio.timeout(timeout):
                await probe()
        except Exception as exc:
            log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
            return "down"
        return "ok"

    results = await asyncio.gather(*(run(name, probe) for name, probe in probes.items()))
    return dict(zip(probes, results, strict=True))
