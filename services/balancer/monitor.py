"""The once-a-second loops: scrape and score every backend, health-check the ejected ones."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from services.balancer import metrics
from services.balancer.pool import Backend, Pool
from services.balancer.scoring import Scrape, components, measure, next_tier, weighted_score
from services.balancer.settings import Settings

log = logging.getLogger(__name__)


class Monitor:
    """Keeps each backend's measurements, score and tier current."""

    def __init__(self, pool: Pool, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.pool = pool
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=settings.balancer_scrape_timeout_seconds)
        self.settings = settings
        self.weights = settings.score_weights
        self.full_scale = settings.full_scale

    async def scrape_all(self) -> None:
        """Scrape every backend that takes traffic, concurrently."""
        await asyncio.gather(*(self.scrape(b) for b in self.pool.backends if b.available))

    async def scrape(self, backend: Backend) -> None:
        """Read /metrics, time the answer, and rescore the backend."""
        started = time.monotonic()
        try:
            async with self.session.get(f"{backend.url}/metrics", timeout=self.timeout) as response:
                response.raise_for_status()
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            backend.scrape_error = f"{type(exc).__name__}: {exc}".strip()
            self.pool.failed(backend, time.monotonic())
            return
        now = time.monotonic()
        backend.scrape_error = None
        backend.consecutive_failures = 0
        # The scrape doubles as a probe, so a backend that gets no traffic still has a
        # current response time and can win its share back once it recovers.
        rtt = backend.rtt.observe(now - started, now)
        reading = Scrape.parse(text, now)
        backend.measured = measure(backend.last_scrape, reading, rtt)
        backend.last_scrape = reading
        self.rescore(backend)

    def rescore(self, backend: Backend) -> None:
        """Score and tier from the latest measurements."""
        backend.parts = components(backend.measured, self.full_scale)
        backend.score = weighted_score(backend.parts, self.weights)
        backend.tier = next_tier(
            backend.score,
            backend.tier,
            self.settings.balancer_tier_thresholds,
            self.settings.balancer_tier_hysteresis,
        )
        name = backend.name
        metrics.SCORE.labels(name).set(backend.score)
        metrics.TIER.labels(name).set(backend.tier)
        metrics.RESPONSE_TIME.labels(name).set(backend.rtt.value)

    async def check_ejected(self) -> None:
        """One health check of every ejected backend."""
        await asyncio.gather(*(self.check(b) for b in self.pool.backends if not b.available))

    async def check(self, backend: Backend) -> None:
        try:
            async with self.session.get(f"{backend.url}/healthz", timeout=self.timeout) as response:
                ok = response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        self.pool.health_checked(backend, ok, time.monotonic())
        if backend.available:
            log.info("backend %s passed its health checks; re-admitted on slow start", backend.name)

    def publish_gauges(self) -> None:
        for backend in self.pool.backends:
            metrics.UP.labels(backend.name).set(1 if backend.available else 0)
            metrics.IN_FLIGHT.labels(backend.name).set(backend.in_flight)


async def every(interval: float, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work()`` each ``interval`` seconds on a steady beat, logging (not dying of) errors."""
    next_at = time.monotonic()
    while True:
        try:
            await work()
        except Exception:
            log.exception("periodic task failed")
        next_at = max(next_at + interval, time.monotonic())
        await asyncio.sleep(next_at - time.monotonic())
