"""One writer per video: a Redis lease that a run holds while it writes the video's outputs.

A job can be delivered twice at once (the outbox sweeper re-publishing a job whose confirm was
lost, a worker that the broker gave up on while it still runs). The lease makes the second
delivery wait until the first run ends; by then the video is ready (the delivery is skipped) or
the run died (its lease expired) and the waiting delivery starts over. A run that loses its
lease is cancelled before it writes again.
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
    """Another run took over the video, or Redis forgot the lease."""


class Lease:
    """``vsp:transcode-lease:{video}`` holding the run id of the one run allowed to write."""

    def __init__(self, redis: Redis, video_id: uuid.UUID, run_id: str, ttl_seconds: float) -> None:
        self.redis = redis
        self.key = f"vsp:transcode-lease:{video_id}"
        self.run_id = run_id
        self.ttl_ms = max(1000, int(ttl_seconds * 1000))

    async def acquire(self, *, poll_seconds: float = 0.5) -> None:
        """Wait until the lease is ours (bounded by the caller's job timeout)."""
        while True:
            if await self.redis.set(self.key, self.run_id, nx=True, px=self.ttl_ms):
                return
            # Polling: the holder may be a dead process that can never notify anyone.
            await asyncio.sleep(poll_seconds)

    async def holder(self) -> str | None:
        """The run id holding the lease now."""
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    async def _extend(self) -> bool:
        return bool(await self.redis.eval(_EXTEND, 1, self.key, self.run_id, self.ttl_ms))  # type: ignore[misc]

    async def release(self) -> None:
        """Give the lease up if it is still ours."""
        await self.redis.eval(_RELEASE, 1, self.key, self.run_id)  # type: ignore[misc]

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the lease while the block runs; cancel the block if the lease is lost."""
        owner = asyncio.current_task()
        assert owner is not None
        lost = asyncio.Event()

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.ttl_ms / 3000)
                try:
                    still_ours = await self._extend()
                except Exception:
                    still_ours = False
                if not still_ours:
                    lost.set()
                    owner.cancel()
                    return

        keeper = asyncio.create_task(renew(), name=f"lease-{self.key}")
        try:
            yield
        except asyncio.CancelledError:
            if lost.is_set() and owner.uncancel() == 0:
                raise LeaseLost(f"lost the transcode lease {self.key}") from None
            raise
        finally:
            await cancel_and_wait(keeper)
            if not lost.is_set():
                with contextlib.suppress(Exception):
                    await self.release()
