"""Background loop: finalizing uploads retried, expired uploads deleted with their parts."""

from __future__ import annotations

import asyncio
import logging

from services.chunked_upload.finalize import retry_stuck, stop_attempts
from services.chunked_upload.service import sweep_expired
from services.chunked_upload.settings import UploadLimits
from shared.core.tasks import cancel_and_wait
from shared.runtime.resources import Resources

log = logging.getLogger(__name__)


class ExpirySweeper:
    """Runs ``retry_stuck`` and ``sweep_expired`` every ``interval_seconds`` until stopped."""

    def __init__(self, res: Resources, limits: UploadLimits, interval_seconds: float) -> None:
        self.res = res
        self.limits = limits
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await retry_stuck(self.res, self.limits)
            except Exception:
                log.exception("retrying finalizing uploads failed")
            try:
                await sweep_expired(self.res, self.limits)
            except Exception:
                log.exception("expiry sweep failed")
            await asyncio.sleep(self.interval_seconds)

    def start(self) -> None:
        """Run the loop in the background."""
        self._task = asyncio.create_task(self._loop(), name="tus-expiry-sweeper")

    async def stop(self) -> None:
        """Stop the loop, and the finalizing attempts HEAD requests started."""
        await cancel_and_wait(self._task)
        self._task = None
        await stop_attempts()
