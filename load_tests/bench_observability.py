"""What being watched costs: a service's CPU per request, throughput and latency while a real
Prometheus scrapes it every second and evaluates the alert rules, against the same process
unscraped, side by side.

One redirector (FastAPI route, so every request passes the metrics middleware) is pinned to core
0, wrk and Prometheus to core 1. Rounds alternate: Prometheus reloaded with no targets (the
baseline), then with the redirector as its target, so drift on a shared machine hits both.
Also: how long rendering ``/metrics`` takes against ``/healthz`` on the same process, and the
scrape duration Prometheus itself records.

    .venv/bin/python -m load_tests.bench_observability --seconds 3 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import httpx

from load_tests.harness import (
    Comparison,
    CpuMeter,
    Report,
    WrkResult,
    command_line,
    require_tools,
    wrk,
)
from services.configs.prometheus import (
    PROMETHEUS_DIR,
    ScrapeJob,
    prometheus_command,
    render_prometheus,
)
from tests.support.infra import scratch_database
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.processes import VSP, Processes
from tests.support.prometheus import Prometheus

PATH = "/?video=" + quote("http://s1.origin-cluster/video/1/a.m3u8", safe="")
SERVER_CORES, LOAD_CORES = [0], [1]
GOAL_CPU_RATIO = 0.95


def taskset(cores: Sequence[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cores))] if shutil.which("taskset") else []


class Watcher:
    """A Prometheus whose targets are switched by rewriting its config and reloading it."""

    def __init__(self, procs: Processes, root: Path, interval: str) -> None:
        self.config = root / "prometheus.yml"
        self.interval = interval
        listen = f"127.0.0.1:{free_port()}"
        self.write([])
        proc = procs.start(
            "prometheus",
            [
                *taskset(LOAD_CORES),
                *prometheus_command(self.config, root / "prometheus-data", listen=listen),
            ],
            ready_url=f"http://{listen}/-/ready",
        )
        self.prometheus = Prometheus(f"http://{listen}", proc)

    def write(self, targets: list[str]) -> None:
        jobs = [ScrapeJob("redirector", targets)] if targets else []
        text = render_prometheus(
            jobs,
            rule_files=[str(PROMETHEUS_DIR / "alerts.yml")],
            scrape_interval=self.interval,
            evaluation_interval=self.interval,
        )
        # A config without scrape jobs still has to say so.
        self.config.write_text(text if jobs else text + "  []\n")

    def watch(self, targets: list[str]) -> None:
        """Scrape exactly ``targets`` from now on."""
        self.write(targets)
        httpx.post(f"{self.prometheus.url}/-/reload", timeout=10).raise_for_status()
        expected = len(targets)
        wait_for(
            lambda: sum(t["health"] == "up" for t in self.prometheus.targets()) == expected,
            timeout=30,
            what=f"Prometheus to settle on {expected} targets",
        )

    def query(self, expr: str) -> float | None:
        result = self.prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None


def run_wrk(url: str, pid: int, args: argparse.Namespace) -> tuple[WrkResult, float]:
    with CpuMeter([pid]) as meter:
        result = wrk(
            url, seconds=args.seconds, connections=args.connections, threads=1, cores=LOAD_CORES
        )
    return result, meter.used


def endpoint_seconds(url: str, count: int) -> tuple[float, int]:
    """Median seconds of ``count`` sequential GETs of ``url``, and the body size."""
    times = []
    size = 0
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - start)
            size = len(response.content)
    return statistics.median(times), size


def measure(procs: Processes, root: Path, args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = procs.start(
        "redirector",
        [*taskset(SERVER_CORES), *VSP, "serve", "redirector", "--port", str(port)],
        ready_url=f"{base}/readyz",
        timeout=90,
    )
    assert httpx.get(base + PATH, timeout=5).status_code == 302
    watcher = Watcher(procs, root, args.scrape_interval)
    wrk(base + PATH, seconds=1, connections=args.connections, threads=1, cores=LOAD_CORES)
    rounds: dict[str, list[tuple[WrkResult, float]]] = {"unwatched": [], "watched": []}
    for _ in range(args.rounds):
        for label, targets in (("unwatched", []), ("watched", [base.removeprefix("http://")])):
            watcher.watch(targets)
            rounds[label].append(run_wrk(base + PATH, service.pid, args))
    watcher.watch([base.removeprefix("http://")])
    time.sleep(3)
    scrape = watcher.query('avg_over_time(scrape_duration_seconds{job="redirector"}[1m])')
    samples = watcher.query('scrape_samples_scraped{job="redirector"}')
    metrics = endpoint_seconds(f"{base}/metrics", args.probes)
    healthz = endpoint_seconds(f"{base}/healthz", args.probes)
    return {
        "rounds": rounds,
        "scrape_seconds": scrape,
        "samples": samples,
        "metrics": metrics,
        "healthz": healthz,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write results/bench_observability.json."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_observability")
    parser.add_argument("--seconds", type=float, default=3, help="wrk time per round")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of unwatched/watched runs")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--scrape-interval", default="1s")
    parser.add_argument("--probes", type=int, default=200, help="GETs of /metrics and /healthz")
    args = parser.parse_args(argv)
    require_tools("wrk", "prometheus")

    root = Path(tempfile.mkdtemp(prefix="vsp-bench-observability-"))
    try:
        with scratch_database(f"vsp_bench_observability_{os.getpid()}") as database_url:
            env = {
                **os.environ,
                "DATABASE_URL": database_url,
                "REDIRECTOR_FAST_PATH": "false",
                "REDIRECTOR_CDN_HOST": "cdn.test",
                "LOG_LEVEL": "WARNING",
            }
            procs = Processes(root, env)
            try:
                out = measure(procs, root, args)
            finally:
                procs.stop_all()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rounds: dict[str, list[tuple[WrkResult, float]]] = out["rounds"]  # type: ignore[assignment]

    def rps(label: str) -> float:
        return median([r.requests_per_second for r, _ in rounds[label]])

    def p99(label: str) -> float:
        return median([r.latency_p99_ms or 0 for r, _ in rounds[label]])

    def per_cpu(label: str) -> float:
        return median([r.requests_per_second * args.seconds / cpu for r, cpu in rounds[label]])

    metrics_s, metrics_bytes = out["metrics"]  # type: ignore[misc]
    healthz_s, _ = out["healthz"]  # type: ignore[misc]
    report = Report("bench_observability", command_line())
    # CPU seconds the service spent per request does not move with what else the machine runs;
    # raw throughput and latency do, so they are shown without a goal.
    report.comparisons += [
        Comparison(
            f"redirects per service CPU-second, scraped every {args.scrape_interval}",
            "req/CPU-s",
            per_cpu("watched"),
            per_cpu("unwatched"),
            "same process, not scraped",
            goal_ratio=GOAL_CPU_RATIO,
            notes=f"median of {args.rounds} rounds of {args.seconds:g} s",
        ),
        Comparison(
            f"redirects/s, scraped every {args.scrape_interval}",
            "req/s",
            rps("watched"),
            rps("unwatched"),
            "same process, not scraped",
        ),
        Comparison(
            f"p99 latency, scraped every {args.scrape_interval}",
            "ms",
            p99("watched"),
            p99("unwatched"),
            "same process, not scraped",
            higher_is_better=False,
        ),
        Comparison(
            "GET /metrics vs GET /healthz (median, idle)",
            "ms",
            metrics_s * 1000,
            healthz_s * 1000,
            "/healthz",
            higher_is_better=False,
            notes=f"/metrics body {metrics_bytes} bytes",
        ),
    ]
    report.extra = {
        "scrape_duration_seconds_avg": out["scrape_seconds"],
        "samples_per_scrape": out["samples"],
        "metrics_bytes": metrics_bytes,
        "rounds": {
            label: [
                {"rps": r.requests_per_second, "p99_ms": r.latency_p99_ms, "cpu_s": cpu}
                for r, cpu in runs
            ]
            for label, runs in rounds.items()
        },
    }
    report.write()
    print(
        f"Prometheus scrape of the redirector: {out['scrape_seconds']} s on average, "
        f"{out['samples']} samples"
    )


if __name__ == "__main__":
    main()
