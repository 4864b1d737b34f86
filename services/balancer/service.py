"""The balancer's running state: pool, proxy, monitor loops and the stats they publish."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import aiohttp

from services.balancer.monitor import Monitor, every
from services.balancer.pool import Backend, Pool
from services.balancer.proxy import Proxy
from services.balancer.settings import Settings
from services.balancer.upstream import Connections
from shared.core.tasks import cancel_and_wait
from shared.http.cors import CorsPolicy

# Idle backend connections are closed well before the backends' own keep-alive timeout (75 s),
# so the balancer rarely reuses one the backend is closing at that moment.
IDLE_CONNECTION_SECONDS = 30


class Balancer:
    """Everything one balancer process owns; started and stopped by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The monitor's client: a scrape and a health check per backend a second.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=settings.balancer_connect_timeout_seconds
            ),
        )
        self.pool = Pool(
            settings.balancer_backends,
            strategy=settings.balancer_strategy,
            ewma_decay_seconds=settings.balancer_ewma_decay_seconds,
            eject_after_failures=settings.balancer_eject_after_failures,
            readmit_after_successes=settings.balancer_readmit_after_successes,
            slow_start_seconds=settings.balancer_slow_start_seconds,
        )
        self.connections = Connections(
            connect_timeout_seconds=settings.balancer_connect_timeout_seconds,
            read_timeout_seconds=settings.balancer_read_timeout_seconds,
            idle_timeout_seconds=IDLE_CONNECTION_SECONDS,
            max_connections=settings.balancer_max_connections,
        )
        self.proxy = Proxy(
            self.pool,
            self.connections,
            settings.balancer_max_attempts,
            CorsPolicy(settings.cors_allowed_origins),
        )
        self.monitor = Monitor(self.pool, self.session, settings)
        self.history: deque[dict[str, Any]] = deque(maxlen=settings.balancer_history_seconds)
        self.latest: dict[str, Any] = {}
        self._published = asyncio.Event()
        self._counted: dict[str, tuple[int, int]] = {}
        self._counted_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.latest = self.snapshot()
        self._tasks = [
            asyncio.create_task(every(self.settings.balancer_scrape_interval_seconds, self.tick)),
            asyncio.create_task(
                every(self.settings.balancer_health_interval_seconds, self.monitor.check_ejected)
            ),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self.connections.close_all()
        await self.session.close()

    async def tick(self) -> None:
        """Scrape, rescore, and publish one stats snapshot."""
        await self.monitor.scrape_all()
        self.monitor.publish_gauges()
        self.latest = self.snapshot()
        self.history.append(self.latest)
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def next_snapshot(self) -> dict[str, Any]:
        """Wait for the next published snapshot."""
        await self._published.wait()
        return self.latest

    def snapshot(self) -> dict[str, Any]:
        """What /api/stats and the dashboard show: per-backend and total figures, this second."""
        now = time.monotonic()
        elapsed = max(1e-6, now - self._counted_at)
        rows = []
        for backend in self.pool.backends:
            requests_before, bytes_before = self._counted.get(backend.name, (0, 0))
            rows.append(
                self._row(
                    backend,
                    now,
                    (backend.requests_total - requests_before) / elapsed,
                    (backend.bytes_total - bytes_before) / elapsed,
                )
            )
            self._counted[backend.name] = (backend.requests_total, backend.bytes_total)
        self._counted_at = now
        total_rate = sum(r["requests_per_second"] for r in rows)
        total_requests = sum(r["requests_total"] for r in rows)
        for row in rows:
            row["share"] = row["requests_per_second"] / total_rate if total_rate else 0.0
            row["share_total"] = row["requests_total"] / total_requests if total_requests else 0.0
        return {
            "time": time.time(),
            "strategy": self.pool.strategy,
            "totals": {
                "requests_per_second": total_rate,
                "bandwidth_bytes_per_second": sum(r["bandwidth_bytes_per_second"] for r in rows),
                "in_flight": sum(r["in_flight"] for r in rows),
                "requests_total": total_requests,
                "retries_total": self.proxy.retries_total,
                "backends_up": sum(1 for r in rows if r["state"] == "healthy"),
            },
            "backends": rows,
        }

    def _row(self, b: Backend, now: float, rate: float, bandwidth: float) -> dict[str, Any]:
        slow_start = self.settings.balancer_slow_start_seconds
        measured = b.measured
        return {
            "name": b.name,
            "url": b.url,
            "state": b.state,
            "tier": b.tier,
            "score": round(b.score, 2),
            "components": {k: round(v, 2) for k, v in b.parts.items()},
            "weight": b.spec.weight,
            "effective_weight": round(b.effective_weight(now, slow_start), 3),
            "cpu_percent": round(measured.cpu, 2),
            "memory_bytes": int(measured.memory),
            "backend_request_rate": round(measured.request_rate, 2),
            "streams": measured.streams,
            "response_time_ms": round(b.rtt.value * 1000, 2),
            "in_flight": b.in_flight,
            "requests_per_second": rate,
            "bandwidth_bytes_per_second": bandwidth,
            "requests_total": b.requests_total,
            "bytes_total": b.bytes_total,
            "failures_total": b.failures_total,
            "consecutive_failures": b.consecutive_failures,
            "ejections_total": b.ejections_total,
            "scrape_error": b.scrape_error,
        }
