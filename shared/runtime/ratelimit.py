"""Fixed-window counters in Redis: how many events a subject had in the current window.

A limit counts events per subject (an account name, a client address) in windows of
``window_seconds``: the first event of a window creates the counter with that expiry, so a
subject is let in again at the latest ``window_seconds`` after its first counted event. Every
process shares the counters, so a limit holds across replicas.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.core.errors import TooManyRequests


@dataclass(frozen=True)
class Limit:
    """At most ``max_events`` of ``name`` per subject in ``window_seconds``."""

    name: str
    max_events: int
    window_seconds: int


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, limit: Limit, subject: str) -> str:
        # Subjects come from requests: hashed, they cannot make long or odd keys.
        digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
        return f"{self.prefix}:ratelimit:{limit.name}:{digest}"

    async def retry_after(self, limit: Limit, subject: str) -> int | None:
        """Seconds until ``subject`` may try again once it has spent ``limit``, else None."""
        key = self._key(limit, subject)
        count = await self.redis.get(key)
        if count is None or int(count) < limit.max_events:
            return None
        ttl = await self.redis.ttl(key)
        return max(int(ttl), 1)

    async def record(self, limit: Limit, subject: str) -> None:
        """Count one event of ``subject``."""
        key = self._key(limit, subject)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, limit.window_seconds, nx=True)
            await pipe.execute()

    async def reset(self, limit: Limit, subject: str) -> None:
        """Forget ``subject``'s events of ``limit``."""
        await self.redis.delete(self._key(limit, subject))

    async def check(self, limit: Limit, subject: str, what: str) -> None:
        """TooManyRequests (429, Retry-After, the limit named) once ``subject`` spent ``limit``."""
        wait = await self.retry_after(limit, subject)
        if wait is not None:
            raise _refusal(limit, what, wait)

    async def spend(self, limit: Limit, subject: str, what: str) -> None:
        """Count one event of ``subject`` (one round trip); TooManyRequests once it is over
        ``limit``, this event included. Refused events count too: a client that keeps
        knocking stays refused until the window ends."""
        key = self._key(limit, subject)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, limit.window_seconds, nx=True)
            count, _ = await pipe.execute()
        if int(count) > limit.max_events:
            wait = max(int(await self.redis.ttl(key)), 1)
            raise _refusal(limit, what, wait)


def _refusal(limit: Limit, what: str, wait: int) -> TooManyRequests:
    return TooManyRequests(
        f"{what}: at most {limit.max_events} in {limit.window_seconds} s; retry in {wait} s",
        headers={"Retry-After": str(wait)},
        limit=limit.name,
        retry_after_seconds=wait,
    )
