"""One writer per video: a Redis lease that a run holds while it writes the video's outputs.

A job can be delivered twice at once (the outbox sweeper re-publishing a job whose confirm was
lost, a worker that the broker gave up on while it still runs). The lease makes the second
delivery wait until the first run ends; by then the video is ready (the delivery is skipped) or
the run died (its lease expired) and the waiting delivery starts over. A run that loses its
lease is cancelled before it writes again (``shared.runtime.lease``).
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from shared.runtime import lease


class Lease(lease.Lease):
    """``vsp:transcode-lease:{video}`` holding the run id of the one run allowed to write."""

    def __init__(self, redis: Redis, video_id: uuid.UUID, run_id: str, ttl_seconds: float) -> None:
        super().__init__(
            redis, f"vsp:transcode-lease:{video_id}", max(1.0, ttl_seconds), token=run_id
        )
