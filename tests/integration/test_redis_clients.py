"""A process's Redis clients: a bounded pool, and one subscriber whose channels are held by
refcount and whose slow listener is let go alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.core.settings import BaseServiceSettings
from shared.runtime.pubsub import Dropped, PubSubHub
from shared.runtime.resources import redis_from_settings
from tests.support.infra import PrivateRedis
from tests.support.polling import eventually


@pytest.fixture
async def redis(private_redis: PrivateRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_pool_is_bounded_and_a_command_waits_for_a_free_connection(
    private_redis: PrivateRedis,
) -> None:
    settings = BaseServiceSettings(
        redis_url=private_redis.url, redis_max_connections=2, redis_pool_timeout_seconds=0.5
    )
    client = redis_from_settings(settings)
    try:
        # Two blocking reads hold both connections until the test pushes what they wait for.
        keys = ["held-1", "held-2"]
        holders = [asyncio.create_task(client.blpop([key], timeout=30)) for key in keys]

        async def both_held() -> bool:
            return sum(c["cmd"] == "blpop" for c in private_redis.clients()) == 2

        await eventually(both_held, within=10, what="two connections blocked in BLPOP")
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        with private_redis.client() as other:
            for key in keys:
                other.rpush(key, b"go")
        assert [pair[1] for pair in await asyncio.gather(*holders)] == [b"go", b"go"]
        assert await client.ping()
    finally:
        await client.aclose()


async def _subscribers(redis: Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_a_channel_stays_subscribed_while_one_listener_wants_it(redis: Redis) -> None:
    hub = PubSubHub(redis)
    try:
        first = await hub.subscribe("news")
        second = await hub.subscribe("news")
        assert await _subscribers(redis, "news") == 1  # one connection for both
        await redis.publish("news", b"one")
        assert await first.get() == b"one" and await second.get() == b"one"

        hub.unsubscribe(first)
        await redis.publish("news", b"two")
        assert await second.get() == b"two"
        assert await _subscribers(redis, "news") == 1

        hub.unsubscribe(second)

        async def gone() -> bool:
            return await _subscribers(redis, "news") == 0

        await eventually(gone, within=10, what="the channel to be unsubscribed")
    finally:
        await hub.close()


async def test_a_listener_that_falls_behind_is_dropped_and_the_others_go_on(redis: Redis) -> None:
    hub = PubSubHub(redis, queue_messages=4)
    try:
        slow = await hub.subscribe("busy")
        fast = await hub.subscribe("busy")
        for n in range(10):  # one at a time, so only the one that reads nothing falls behind
            await redis.publish("busy", str(n).encode())
            assert await asyncio.wait_for(fast.get(), timeout=10) == str(n).encode()
        assert slow.dropped and not fast.dropped
        with pytest.raises(Dropped):
            await slow.get()
    finally:
        await hub.close()
