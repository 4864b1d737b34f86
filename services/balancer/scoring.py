"""Pure scoring: backend measurements -> component scores -> weighted score -> tier.

A score runs from 0 (idle) to 100 (every measurement at its "full" value). Tiers split the range
at the thresholds (25/50/75 by default): tier 1 is the healthiest. Hysteresis keeps a backend in
its tier until its score clears a boundary by a margin, so a score wobbling around 25 does not
flip the backend between tiers every second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CPU = "process_cpu_seconds_total"
MEMORY = "process_resident_memory_bytes"
REQUESTS = "http_requests_total"
IN_PROGRESS = "http_requests_in_progress"
SCRAPED = (CPU, MEMORY, REQUESTS, IN_PROGRESS)


def sum_samples(text: str, names: Iterable[str] = SCRAPED) -> dict[str, float]:
    """Sum every sample of each named metric in a Prometheus text exposition."""
    wanted = set(names)
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            rest = line[line.rfind("}") + 1 :]
        else:
            name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            totals[name] = totals.get(name, 0.0) + value
    return totals


@dataclass(frozen=True)
class Scrape:
    """One reading of a backend's /metrics."""

    at: float
    cpu_seconds: float
    memory_bytes: float
    requests_total: float
    in_progress: float

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        """Read the four measurements; a metric the backend lacks counts as zero."""
        sums = sum_samples(text)
        return cls(
            at=at,
            cpu_seconds=sums.get(CPU, 0.0),
            memory_bytes=sums.get(MEMORY, 0.0),
            requests_total=sums.get(REQUESTS, 0.0),
            in_progress=sums.get(IN_PROGRESS, 0.0),
        )


@dataclass(frozen=True)
class Measurements:
    cpu: float = 0.0  # percent of one core
    memory: float = 0.0  # resident bytes
    request_rate: float = 0.0  # requests per second
    streams: float = 0.0  # requests in progress
    response_time: float = 0.0  # seconds, the balancer's own EWMA

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "request_rate": self.request_rate,
            "streams": self.streams,
            "response_time": self.response_time,
        }


def measure(previous: Scrape | None, current: Scrape, response_time: float) -> Measurements:
    """Rates come from two readings; a counter that went backwards (a restart) gives no rate."""
    cpu = rate = 0.0
    if previous is not None and current.at > previous.at:
        elapsed = current.at - previous.at
        if current.cpu_seconds >= previous.cpu_seconds:
            cpu = 100 * (current.cpu_seconds - previous.cpu_seconds) / elapsed
        if current.requests_total >= previous.requests_total:
            rate = (current.requests_total - previous.requests_total) / elapsed
    return Measurements(
        cpu=cpu,
        memory=current.memory_bytes,
        request_rate=rate,
        streams=current.in_progress,
        response_time=response_time,
    )


def components(measured: Measurements, full_scale: Mapping[str, float]) -> dict[str, float]:
    """Each measurement as 0..100 of its full-scale value."""
    return {
        name: max(0.0, min(100.0, 100 * value / full_scale[name]))
        for name, value in measured.as_dict().items()
    }


def weighted_score(parts: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The weighted mean of the component scores (weights need not sum to one)."""
    total = sum(weights.values())
    return sum(parts[name] * weight for name, weight in weights.items()) / total


def tier_of(score: float, thresholds: tuple[float, ...]) -> int:
    """1 below the first threshold, 2 below the second, and so on."""
    return 1 + sum(1 for limit in thresholds if score >= limit)


def next_tier(
    score: float, current: int | None, thresholds: tuple[float, ...], hysteresis: float
) -> int:
    """The tier after this score: a move needs the score past the boundary by ``hysteresis``."""
    plain = tier_of(score, thresholds)
    if current is None or plain == current:
        return plain
    if plain > current:
        return max(current, tier_of(score - hysteresis, thresholds))
    return min(current, tier_of(score + hysteresis, thresholds))


class PeakEwma:
    """Response time that jumps up at once on a slow sample and decays with time constant tau.

    Reacting instantly to slowness and forgetting it gradually is what steers traffic away
    within one request, yet lets a recovered backend earn its share back over a few seconds.
    """

    def __init__(self, decay_seconds: float) -> None:
        self.decay_seconds = decay_seconds
        self.value = 0.0
        self._at: float | None = None

    def observe(self, sample: float, now: float) -> float:
        """Fold one sample in and return the new value."""
        if self._at is None or sample >= self.value:
            self.value = sample
        else:
            keep = math.exp(-max(0.0, now - self._at) / self.decay_seconds)
            self.value = self.value * keep + sample * (1 - keep)
        self._at = now
        return self.value

    def decayed(self, now: float) -> float:
        """The value faded toward zero for the time since the last sample.

        What picking compares. A backend that gets no requests is sampled only by the monitor's
        scrapes, and not at all while they fail or are switched far apart, so its last (slow)
        value would otherwise stand and starve it. Faded, it earns a probe request after a few
        time constants, and a slow answer sends it straight back up.
        """
        if self._at is None:
            return self.value
        return self.value * math.exp(-max(0.0, now - self._at) / self.decay_seconds)

    def reset(self) -> None:
        self.value = 0.0
        self._at = None
