"""A Redis lease: one holder at a time, renewed while held, and a holder that loses it stops.

``SET key token NX PX ttl`` takes it; the holder renews it every third of its life and frees it
on the way out, both by compare-and-act scripts, so nobody extends or frees a lease another
holder took since. A holder that finds its lease gone (it expired while the process stalled, or
Redis forgot it) stops before it writes again: ``kept`` cancels its block and raises
``LeaseLost``, or, for a block that must not be cancelled (an HTTP handler reading a request
body, whose connection a cancelled read would drop), ``check`` raises it at the holder's next
step. A lease only makes a second holder unlikely; what the holder writes must still be fenced
by its token where it lands (a compare-and-set on a row).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from shared.core.tasks import cancel_and_wait

_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """Another holder took over, or Redis forgot the lease."""


class Lease:
    """The lease ``key``, held under ``token`` (a fresh one unless given)."""

    def __init__(
        self, redis: Redis, key: str, ttl_seconds: float, token: str | None = None
    ) -> None:
        self.redis = redis
        self.key = key
        self.token = token or uuid.uuid4().hex
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.lost = False

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; whether it is ours now."""
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def acquire(self, *, poll_seconds: float = 0.5) -> None:
        """Wait until the lease is ours (bounded by the caller's own timeout)."""
        while True:
            if await self.try_acquire():
                return
            # Polling: the holder may be a dead process that can never notify anyone.
            await asyncio.sleep(poll_seconds)

    async def holder(self) -> str | None:
        """The token holding the lease now."""
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    async def _extend(self) -> bool:
        return bool(await self.redis.eval(_EXTEND, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> None:
        """Give the lease up if it is still ours."""
        await self.redis.eval(_RELEASE, 1, self.key, self.token)

    def check(self) -> None:
        """Raise LeaseLost once the lease is known to be lost."""
        if self.lost:
            raise LeaseLost(f"lost the lease {self.key}")

    @contextlib.asynccontextmanager
    async def kept(self, *, cancel: bool = True) -> AsyncIterator[None]:
        """Renew the lease while the block runs; if it is lost, cancel the block (or, without
        ``cancel``, leave it to ``check``)."""
        owner = asyncio.current_task()
        assert owner is not None

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.ttl_ms / 3000)
                try:
                    still_ours = await self._extend()
                except Exception:
                    still_ours = False
                if not still_ours:
                    self.lost = True
                    if cancel:
                        owner.cancel()
                    return

        keeper = asyncio.create_task(renew(), name=f"lease-{self.key}")
        try:
            yield
        except asyncio.CancelledError:
            if self.lost and cancel and owner.uncancel() == 0:
                raise LeaseLost(f"lost the lease {self.key}") from None
            raise
        finally:
            await cancel_and_wait(keeper)
            if not self.lost:
                with contextlib.suppress(Exception):
                    await self.release()
