"""Objects in the store the session's services read, and short stand-ins for their bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os

from shared.core.settings import BaseServiceSettings
from shared.runtime.resources import store_from_settings
from shared.storage.base import ObjectStore


def put_object(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Store an object where the session's origin reads from (from outside the event loop)."""

    async def put() -> None:
        store = store_from_settings(BaseServiceSettings())
        try:
            await store.put_bytes(key, data, content_type)
        finally:
            await store.close()

    asyncio.run(put())


async def put_random(store: ObjectStore, key: str, size: int) -> bytes:
    """Store ``size`` random bytes under ``key`` and return them."""
    data = os.urandom(size)
    await store.put_bytes(key, data, "video/iso.segment")
    return data


def digest(data: bytes) -> str:
    """A short stand-in for bytes in assertions (pytest would diff megabytes otherwise)."""
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()[:16]}"
