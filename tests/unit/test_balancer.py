"""Balancer scoring, tiers, picking strategies and failover bookkeeping (pure logic)."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
from pydantic import ValidationError

from services.balancer.pool import Backend, Pool
from services.balancer.scoring import (
    Measurements,
    PeakEwma,
    Scrape,
    components,
    measure,
    next_tier,
    sum_samples,
    tier_of,
    weighted_score,
)
from services.balancer.settings import BackendSpec, Settings

EXPOSITION = """\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+08
http_requests_total{method="GET",route="/origin/{path}",status="200"} 90.0
http_requests_total{method="GET",route="/origin/{path}",status="404"} 10.0
http_requests_created{method="GET",route="/origin/{path}",status="200"} 1.7e+09
http_requests_in_progress{route="/origin/{path}"} 3.0
http_requests_in_progress{route="/api/videos"} 1.0
http_request_duration_seconds_bucket{le="0.1",method="GET",route="x {y}"} 4.0
"""

THRESHOLDS = (25.0, 50.0, 75.0)


def test_exposition_sums_every_labelled_sample() -> None:
    reading = Scrape.parse(EXPOSITION, at=10.0)
    assert reading.cpu_seconds == 12.5
    assert reading.memory_bytes == 104857600
    assert reading.requests_total == 100
    assert reading.in_progress == 4
    assert sum_samples("garbage line\nhttp_requests_total NaN\n") == {}


def test_rates_come_from_two_readings_and_ignore_counter_resets() -> None:
    before = Scrape(at=10.0, cpu_seconds=5.0, memory_bytes=1, requests_total=100, in_progress=0)
    after = Scrape(at=12.0, cpu_seconds=6.0, memory_bytes=2, requests_total=300, in_progress=7)
    measured = measure(before, after, response_time=0.05)
    assert measured == Measurements(
        cpu=50.0, memory=2, request_rate=100.0, streams=7, response_time=0.05
    )
    restarted = Scrape(at=13.0, cpu_seconds=0.1, memory_bytes=3, requests_total=2, in_progress=0)
    assert measure(after, restarted, 0.01).request_rate == 0
    assert measure(after, restarted, 0.01).cpu == 0
    assert measure(None, after, 0.01).request_rate == 0


def test_default_weights_make_the_original_score() -> None:
    settings = Settings(balancer_backends=["http://127.0.0.1:1"])
    weights = settings.score_weights
    assert weights == {
        "cpu": 0.30,
        "memory": 0.25,
        "request_rate": 0.20,
        "streams": 0.15,
        "response_time": 0.10,
    }
    full = settings.full_scale
    busy_cpu = Measurements(cpu=100)
    assert weighted_score(components(busy_cpu, full), weights) == pytest.approx(30)
    everything = Measurements(
        cpu=400, memory=full["memory"] * 2, request_rate=10_000, streams=1000, response_time=9
    )
    assert components(everything, full) == dict.fromkeys(weights, 100.0)
    assert weighted_score(components(everything, full), weights) == pytest.approx(100)
    half_streams = Measurements(streams=full["streams"] / 2)
    assert weighted_score(components(half_streams, full), weights) == pytest.approx(7.5)


def test_tiers_split_at_25_50_75() -> None:
    assert [tier_of(s, THRESHOLDS) for s in (0, 24.9, 25, 49.9, 50, 74.9, 75, 100)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
    ]


def test_hysteresis_keeps_a_wobbling_score_in_its_tier() -> None:
    tier = 1
    history = []
    for score in (24, 27, 23, 29, 26, 31, 27, 22, 21, 19, 24, 80, 72, 69):
        tier = next_tier(score, tier, THRESHOLDS, hysteresis=5)
        history.append(tier)
    assert history == [1, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 4, 4, 3]
    assert next_tier(60, None, THRESHOLDS, 5) == 3


def test_peak_ewma_jumps_up_and_decays_with_time() -> None:
    ewma = PeakEwma(decay_seconds=2.0)
    ewma.observe(0.010, now=0.0)
    assert ewma.observe(0.300, now=0.1) == 0.300
    values = [ewma.observe(0.010, now=float(t)) for t in range(1, 9)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert values[0] > 0.15
    assert values[-1] < 0.03


def make_pool(n: int, strategy: str = "tiered", **kwargs: float) -> Pool:
    specs = [BackendSpec(url=f"http://127.0.0.1:{9000 + i}", name=f"b{i}") for i in range(n)]
    return Pool(
        specs,
        strategy=strategy,  # type: ignore[arg-type]
        ewma_decay_seconds=2.0,
        eject_after_failures=int(kwargs.get("eject", 3)),
        readmit_after_successes=2,
        slow_start_seconds=kwargs.get("slow_start", 10.0),
        rng=random.Random(7),
    )


def by_name(pool: Pool, name: str) -> Backend:
    return next(b for b in pool.backends if b.name == name)


def spread(pool: Pool, picks: int, now: float = 100.0) -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        backend = pool.pick(now)
        assert backend is not None
        counts[backend.name] += 1
    return counts


def test_tiered_only_picks_from_the_best_non_empty_tier() -> None:
    pool = make_pool(4)
    for backend, tier in zip(pool.backends, (2, 2, 3, 4), strict=True):
        backend.tier = tier
    counts = spread(pool, 400)
    assert set(counts) == {"b0", "b1"}
    assert min(counts.values()) > 120


def test_power_of_two_choices_avoids_the_slow_backend() -> None:
    pool = make_pool(3)
    for backend in pool.backends:
        backend.rtt.observe(0.005, now=99.0)
    by_name(pool, "b0").rtt.observe(0.300, now=99.5)
    counts = spread(pool, 600)
    assert counts["b0"] == 0
    assert abs(counts["b1"] - counts["b2"]) < 120


def test_a_starved_backend_is_probed_again_once_its_slowness_fades() -> None:
    # One request every 0.1 s for 20 s, each answered at once: b0 answers in 300 ms, the
    # others in 5 ms. With nothing to sample, b0's slowness must fade, or it is never tried
    # again: it gets a probe every few time constants, and each slow answer sends it back.
    pool = make_pool(3)
    slow = by_name(pool, "b0")
    slow.rtt.observe(0.300, now=0.0)
    probes = []
    for step in range(1, 201):
        now = step * 0.1
        backend = pool.pick(now)
        assert backend is not None
        if backend is slow:
            probes.append(now)
        backend.rtt.observe(0.300 if backend is slow else 0.005, now)
    assert probes, "the slow backend was never tried again"
    assert 6.0 < probes[0] < 12.0, probes
    assert len(probes) <= 4, probes


def test_power_of_two_choices_weighs_the_queue_a_request_joins() -> None:
    pool = make_pool(2)
    for backend in pool.backends:
        backend.rtt.observe(0.010, now=99.0)
    by_name(pool, "b0").in_flight = 5
    assert spread(pool, 50) == Counter({"b1": 50})


def test_round_robin_follows_the_weights_exactly() -> None:
    specs = [
        BackendSpec(url="http://a:1", name="a", weight=2),
        BackendSpec(url="http://b:1", name="b", weight=1),
    ]
    pool = Pool(
        specs,
        strategy="round_robin",
        ewma_decay_seconds=2,
        eject_after_failures=3,
        readmit_after_successes=2,
        slow_start_seconds=0,
    )
    sequence = [pool.pick(1.0).name for _ in range(6)]  # type: ignore[union-attr]
    assert sequence == ["a", "b", "a", "a", "b", "a"]


def test_least_connections_prefers_the_idlest() -> None:
    pool = make_pool(3, "least_connections")
    by_name(pool, "b0").in_flight = 4
    by_name(pool, "b1").in_flight = 1
    by_name(pool, "b2").in_flight = 2
    assert spread(pool, 10) == Counter({"b1": 10})


def test_consecutive_failures_eject_and_health_checks_readmit_on_slow_start() -> None:
    pool = make_pool(2, eject=3, slow_start=10.0)
    sick = by_name(pool, "b0")
    pool.failed(sick, now=1.0)
    pool.succeeded(sick, 0.01, now=1.1)
    pool.failed(sick, now=1.2)
    pool.failed(sick, now=1.3)
    assert sick.available, "a success in between resets the run of failures"
    pool.failed(sick, now=1.4)
    assert sick.state == "ejected" and sick.ejections_total == 1
    assert spread(pool, 20) == Counter({"b1": 20})

    pool.health_checked(sick, True, now=5.0)
    pool.health_checked(sick, False, now=6.0)
    pool.health_checked(sick, True, now=7.0)
    assert not sick.available, "readmission needs two passing checks in a row"
    pool.health_checked(sick, True, now=8.0)
    assert sick.available and sick.admitted_at == 8.0
    assert sick.ramp(8.0, 10.0) == pytest.approx(0.1)
    assert sick.ramp(13.0, 10.0) == pytest.approx(0.5)
    assert sick.ramp(18.5, 10.0) == 1.0

    rr = make_pool(2, "round_robin", slow_start=10.0)
    fresh = by_name(rr, "b0")
    fresh.admitted_at = 100.0
    early = spread(rr, 110, now=101.0)
    assert early["b0"] == 10  # weight 0.1 against 1.0
    late = spread(rr, 100, now=111.0)
    assert late["b0"] == 50


def test_every_backend_ejected_still_gets_a_panic_pick() -> None:
    pool = make_pool(2, eject=1)
    for backend in pool.backends:
        pool.failed(backend, now=1.0)
    assert all(not b.available for b in pool.backends)
    first = pool.pick(2.0)
    assert first is not None
    second = pool.pick(2.0, exclude=[first])
    assert second is not None and second is not first
    assert pool.pick(2.0, exclude=pool.backends) is None


def test_settings_parse_backends_and_refuse_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "BALANCER_BACKENDS",
        '["http://127.0.0.1:8004/", {"url": "http://127.0.0.1:8005", "weight": 2, "name": "e2"}]',
    )
    settings = Settings()
    assert [(b.label, b.url, b.weight) for b in settings.balancer_backends] == [
        ("127.0.0.1:8004", "http://127.0.0.1:8004", 1.0),
        ("e2", "http://127.0.0.1:8005", 2.0),
    ]
    monkeypatch.delenv("BALANCER_BACKENDS")
    assert [b.label for b in Settings().balancer_backends] == ["edge-1", "edge-2"]
    with pytest.raises(ValidationError, match="http://"):
        Settings(balancer_backends=["127.0.0.1:8004"])
    with pytest.raises(ValidationError, match="thresholds"):
        Settings(balancer_tier_thresholds=(50, 25, 75))
    with pytest.raises(ValidationError, match="distinct"):
        Settings(balancer_backends=["http://a:1", "http://a:1"])
    with pytest.raises(ValidationError):
        Settings(balancer_strategy="random")
