"""One writer per upload: a Redis lock, refreshed while held, released by its owner only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from shared.core.errors import Locked
from shared.core.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Compare-and-act scripts, so a writer never extends or frees a lock another writer now holds.
_REFRESH = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"  # noqa: E501
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"  # noqa: E501


def lock_key(upload_id: uuid.UUID) -> str:
    return f"vsp:tus-lock:{upload_id}"


@contextlib.asynccontextmanager
async def upload_lock(
    redis: Redis, upload_id: uuid.UUID, ttl_seconds: float
) -> AsyncIterator[None]:
    """Hold the upload's lock for the block; Locked (423) when another writer has it."""
    key = lock_key(upload_id)
    token = uuid.uuid4().hex
    ttl_ms = max(1, int(ttl_seconds * 1000))
    if not await redis.set(key, token, nx=True, px=ttl_ms):
        raise Locked(
            f"upload {upload_id} is being written by another request; retry shortly",
            headers={"Retry-After": "1"},
        )

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(ttl_seconds / 3)
            if not await redis.eval(_REFRESH, 1, key, token, ttl_ms):
                log.warning("lock of upload %s was lost while writing", upload_id)
                return

    refresher = asyncio.create_task(keep_alive(), name=f"tus-lock-{upload_id}")
    try:
        yield
    finally:
        await cancel_and_wait(refresher)
        try:
            await redis.eval(_RELEASE, 1, key, token)
        except Exception:
            log.exception("releasing the lock of upload %s failed; it expires by itself", upload_id)
