"""One writer per upload: a Redis lease, renewed while held; a writer that loses it stops.

The lease's token also fences the row: the writer claims the upload with it
(``UploadRepository.claim``) and every commit it makes checks it, so a writer that lost the lock
(a stalled process, Redis forgetting the key) can neither move the offset nor finish the upload.
Before each thing it stores or commits, the writer also checks the lease itself and stops (409)
once it is known to be lost. It is not cancelled outright: a handler cancelled while it awaits
the request body would drop the connection instead of answering.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.core.errors import Conflict, Locked
from shared.runtime.lease import Lease, LeaseLost


def lock_key(upload_id: uuid.UUID) -> str:
    return f"vsp:tus-lock:{upload_id}"


@dataclass(frozen=True)
class Writer:
    """The request allowed to write an upload: its lock, whose token it claimed the row with."""

    lease: Lease

    @property
    def token(self) -> str:
        return self.lease.token

    def check(self) -> None:
        """Stop (409) once the lock is known to be lost; called before each write."""
        self.lease.check()


@contextlib.asynccontextmanager
async def upload_lock(
    redis: Redis, upload_id: uuid.UUID, ttl_seconds: float
) -> AsyncIterator[Writer]:
    """Hold the upload's lock for the block.

    Locked (423) when another writer has it; Conflict (409) when the block stops because the
    lock was lost meanwhile.
    """
    lease = Lease(redis, lock_key(upload_id), ttl_seconds)
    if not await lease.try_acquire():
        raise Locked(
            f"upload {upload_id} is being written by another request; retry shortly",
            headers={"Retry-After": "1"},
        )
    try:
        async with lease.kept(cancel=False):
            yield Writer(lease)
    except LeaseLost:
        raise Conflict(
            f"the lock of upload {upload_id} was lost while writing; HEAD for its offset"
        ) from None
