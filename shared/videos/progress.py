"""Upload and transcode progress in Redis: the latest state in a hash, changes on pub/sub."""

from __future__ import annotations

import json
import uuid
from typing import Any

from redis.asyncio import Redis

_TTL_SECONDS = 24 * 3600


def progress_key(video_id: uuid.UUID | str) -> str:
    return f"vsp:progress:{video_id}"


def channel(video_id: uuid.UUID | str) -> str:
    return f"vsp:progress-events:{video_id}"


async def publish(redis: Redis, video_id: uuid.UUID | str, **fields: Any) -> None:
    """Record the latest progress fields and announce them to listeners."""
    key = progress_key(video_id)
    encoded = {k: json.dumps(v) for k, v in fields.items()}
    async with redis.pipeline(transaction=False) as pipe:
        # redis-py's stub wants an invariant Mapping key type that a dict[str, str] never is.
        pipe.hset(key, mapping=encoded)  # type: ignore[arg-type]
        pipe.expire(key, _TTL_SECONDS)
        pipe.publish(channel(video_id), json.dumps({"video_id": str(video_id), **fields}))
        await pipe.execute()


async def latest(redis: Redis, video_id: uuid.UUID | str) -> dict[str, Any]:
    """The most recent progress fields recorded for the video."""
    raw = await redis.hgetall(progress_key(video_id))
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
