"""The backend pool: per-backend state, failover bookkeeping and the picking strategies.

States: ``healthy`` (takes traffic), ``ejected`` (after consecutive failures; only the health
check talks to it) and back to ``healthy`` with a slow-start ramp on its weight.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from services.balancer import metrics
from services.balancer.scoring import Measurements, PeakEwma, Scrape
from services.balancer.settings import BackendSpec, Strategy

SLOW_START_FLOOR = 0.1


@dataclass(eq=False)
class Backend:
    spec: BackendSpec
    rtt: PeakEwma
    state: str = "healthy"
    tier: int = 1
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    measured: Measurements = field(default_factory=Measurements)
    last_scrape: Scrape | None = None
    scrape_error: str | None = None
    in_flight: int = 0
    consecutive_failures: int = 0
    health_successes: int = 0
    admitted_at: float | None = None
    requests_total: int = 0
    failures_total: int = 0
    bytes_total: int = 0
    ejections_total: int = 0
    current_rr: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def available(self) -> bool:
        return self.state == "healthy"

    def ramp(self, now: float, slow_start_seconds: float) -> float:
        """Share of its weight a re-admitted backend gets, rising from 10% to all of it."""
        if self.admitted_at is None or slow_start_seconds <= 0:
            return 1.0
        progress = (now - self.admitted_at) / slow_start_seconds
        return 1.0 if progress >= 1 else max(SLOW_START_FLOOR, progress)

    def effective_weight(self, now: float, slow_start_seconds: float) -> float:
        return self.spec.weight * self.ramp(now, slow_start_seconds)

    def cost(self, now: float, slow_start_seconds: float) -> float:
        """Expected wait on this backend: response time times the queue a new request joins."""
        rtt = self.rtt.decayed(now) or 1e-4
        return rtt * (self.in_flight + 1) / self.effective_weight(now, slow_start_seconds)


class Pool:
    """Chooses a backend per request and keeps the failover state of each."""

    def __init__(
        self,
        specs: list[BackendSpec],
        *,
        strategy: Strategy,
        ewma_decay_seconds: float,
        eject_after_failures: int,
        readmit_after_successes: int,
        slow_start_seconds: float,
        rng: random.Random | None = None,
    ) -> None:
        self.backends = [Backend(spec, PeakEwma(ewma_decay_seconds)) for spec in specs]
        self.strategy = strategy
        self.eject_after_failures = eject_after_failures
        self.readmit_after_successes = readmit_after_successes
        self.slow_start_seconds = slow_start_seconds
        self.rng = rng or random.Random()
        self._pickers: dict[str, Callable[[list[Backend], float], Backend]] = {
            "tiered": self._tiered,
            "round_robin": self._round_robin,
            "least_connections": self._least_connections,
        }

    def pick(self, now: float, exclude: Collection[Backend] = ()) -> Backend | None:
        """The backend for the next request, or None when every one was tried already.

        When every backend is ejected the pool still tries them (a "panic" pick): a guess
        beats refusing every viewer outright.
        """
        untried = [b for b in self.backends if b not in exclude] if exclude else self.backends
        candidates = [b for b in untried if b.state == "healthy"] or untried
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self._pickers[self.strategy](candidates, now)

    def _weighted_sample(self, backends: list[Backend], now: float, k: int) -> list[Backend]:
        chosen: list[Backend] = []
        remaining = list(backends)
        for _ in range(min(k, len(remaining))):
            weights = [b.effective_weight(now, self.slow_start_seconds) for b in remaining]
            choice = self.rng.choices(remaining, weights)[0]
            chosen.append(choice)
            remaining.remove(choice)
        return chosen

    def _tiered(self, candidates: list[Backend], now: float) -> Backend:
        best = min(b.tier for b in candidates)
        tier = [b for b in candidates if b.tier == best]
        if len(tier) == 1:
            return tier[0]
        # Two of two need no sampling: this runs per request, and two backends is common.
        first, second = tier if len(tier) == 2 else self._weighted_sample(tier, now, 2)
        slow_start = self.slow_start_seconds
        first_cost, second_cost = first.cost(now, slow_start), second.cost(now, slow_start)
        if first_cost == second_cost:
            # A tie (no measurements yet, say) splits by weight, as the sampling order would.
            first_weight = first.effective_weight(now, slow_start)
            share = first_weight / (first_weight + second.effective_weight(now, slow_start))
            return first if self.rng.random() < share else second
        return first if first_cost < second_cost else second

    def _round_robin(self, candidates: list[Backend], now: float) -> Backend:
        # Smooth weighted round robin: each turn every backend earns its weight and the richest
        # pays the total, which interleaves picks instead of sending bursts to the heaviest.
        total = 0.0
        chosen = candidates[0]
        for backend in candidates:
            weight = backend.effective_weight(now, self.slow_start_seconds)
            backend.current_rr += weight
            total += weight
            if backend.current_rr > chosen.current_rr:
                chosen = backend
        chosen.current_rr -= total
        return chosen

    def _least_connections(self, candidates: list[Backend], now: float) -> Backend:
        lowest = min(
            (b.in_flight + 1) / b.effective_weight(now, self.slow_start_seconds) for b in candidates
        )
        tied = [
            b
            for b in candidates
            if (b.in_flight + 1) / b.effective_weight(now, self.slow_start_seconds) == lowest
        ]
        return self.rng.choice(tied)

    def started(self, backend: Backend) -> None:
        backend.in_flight += 1
        backend.requests_total += 1

    def finished(self, backend: Backend, sent_bytes: int) -> None:
        backend.in_flight -= 1
        backend.bytes_total += sent_bytes

    def succeeded(self, backend: Backend, response_seconds: float, now: float) -> None:
        backend.rtt.observe(response_seconds, now)
        backend.consecutive_failures = 0

    def failed(self, backend: Backend, now: float) -> None:
        """Count a failure; enough in a row eject the backend."""
        backend.failures_total += 1
        backend.consecutive_failures += 1
        metrics.FAILURES.labels(backend.name).inc()
        if backend.available and backend.consecutive_failures >= self.eject_after_failures:
            backend.state = "ejected"
            backend.health_successes = 0
            backend.ejections_total += 1
            metrics.EJECTIONS.labels(backend.name).inc()

    def health_checked(self, backend: Backend, ok: bool, now: float) -> None:
        """An ejected backend comes back after enough passing checks in a row, on slow start."""
        if backend.available:
            return
        backend.health_successes = backend.health_successes + 1 if ok else 0
        if backend.health_successes >= self.readmit_after_successes:
            backend.state = "healthy"
            backend.consecutive_failures = 0
            backend.admitted_at = now
            backend.last_scrape = None
            backend.rtt.reset()
