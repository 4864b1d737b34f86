"""Balancer benchmark: throughput through it vs straight to a backend vs haproxy, same run.

Starts N backends (edges in front of an origin, or origins alone), the balancer and haproxy over
the same backends, then measures each path with wrk on one signed segment. A second scenario
makes one backend slow and compares p95 latency of the tiered balancer with round robin.

    .venv/bin/python -m load_tests.bench_balancer --seconds 5 --connections 32 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from load_tests.harness import Comparison, CpuMeter, ProcessStack, Report, command_line, wrk
from tests.support.ports import free_port
from tests.support.processes import VSP
from tests.support.signing import signed_path

ADMIN_TOKEN = "bench-admin-token"
KEY = "videos/00000000-0000-4000-8000-00000000beef/hls/720p/seg_00000.m4s"


class Stack(ProcessStack):
    """Origin, edges, the balancer and haproxy of one run; every backend takes fault injection."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, FAULT_ADMIN_TOKEN=ADMIN_TOKEN)

    def service(self, name: str, port: int, **env: str) -> int:
        args = [*VSP, "serve", name, "--port", str(port)]
        return self.start(f"{name}-{port}", args, f"http://127.0.0.1:{port}/healthz", **env).pid


def haproxy_config(port: int, backends: dict[str, str]) -> str:
    servers = "\n".join(
        f"  server {name} {url.split('://', 1)[1]} check inter 1s" for name, url in backends.items()
    )
    return f"""global
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend viewers
  bind 127.0.0.1:{port}
  default_backend edges
backend edges
  balance roundrobin
{servers}
"""


def start_backends(stack: Stack, kind: str, count: int) -> tuple[dict[str, str], list[int]]:
    """``count`` backends; edges get one shared origin behind them."""
    pids: list[int] = []
    origin_port = free_port()
    origin = f"http://127.0.0.1:{origin_port}"
    if kind == "edge":
        pids.append(stack.service("origin", origin_port))
    backends = {}
    for i in range(count):
        port = free_port()
        if kind == "edge":
            pids.append(
                stack.service(
                    "edge",
                    port,
                    EDGE_ORIGIN_URL=origin,
                    EDGE_CACHE_DIR=str(stack.root / f"edge-{i}"),
                    EDGE_ID=f"edge-{i}",
                )
            )
        else:
            pids.append(stack.service("origin", port))
        backends[f"b{i}"] = f"http://127.0.0.1:{port}"
    return backends, pids


def start_balancer(stack: Stack, backends: dict[str, str], strategy: str) -> tuple[str, int]:
    port = free_port()
    spec = json.dumps([{"url": url, "name": name} for name, url in backends.items()])
    pid = stack.service("balancer", port, BALANCER_BACKENDS=spec, BALANCER_STRATEGY=strategy)
    return f"http://127.0.0.1:{port}", pid


def put_segment(stack: Stack, size: int) -> str:
    path = stack.root / "objects" / KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return signed_path(KEY, 24 * 3600)


# Requests per second, requests per server CPU-second, failed requests, proxy CPU ms per request.
Measurement = tuple[float, float, int, float]


def median(runs: Sequence[Measurement]) -> Measurement:
    """Each figure's median over the rounds (failures: their sum)."""
    middle = len(runs) // 2
    rps, per_cpu, _, proxy_ms = [sorted(column)[middle] for column in zip(*runs, strict=True)]
    return rps, per_cpu, sum(run[2] for run in runs), proxy_ms


def measure(
    url: str, pids: Sequence[int], seconds: float, connections: int, proxy: int | None = None
) -> Measurement:
    """Requests per second, requests per server CPU-second, failed requests, and the proxy's
    own CPU milliseconds per request (0 without a proxy)."""
    wrk(url, seconds=1, connections=connections)  # warm caches and connection pools
    with CpuMeter(pids) as cpu, CpuMeter([proxy] if proxy else []) as proxy_cpu:
        result = wrk(url, seconds=seconds, connections=connections)
    served = result.requests_per_second * seconds
    failed = result.errors + result.non_2xx_3xx
    per_request_ms = 1000 * proxy_cpu.used / served if served else 0.0
    return (
        result.requests_per_second,
        served / cpu.used if cpu.used else 0.0,
        failed,
        per_request_ms,
    )


def throughput(args: argparse.Namespace, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-balancer-") as tmp:
        stack = Stack(Path(tmp))
        try:
            path = put_segment(stack, args.size)
            backends, backend_pids = start_backends(stack, args.backend, args.backends)
            balancer, balancer_pid = start_balancer(stack, backends, "tiered")
            hap_port = free_port()
            cfg = Path(tmp) / "haproxy.cfg"
            cfg.write_text(haproxy_config(hap_port, backends))
            hap_pid = stack.start("haproxy", ["haproxy", "-f", str(cfg), "-db"], None).pid
            time.sleep(1.5)
            first = next(iter(backends.values()))
            paths = {
                "direct": (first + path, backend_pids, None),
                "balancer": (balancer + path, [*backend_pids, balancer_pid], balancer_pid),
                "haproxy": (
                    f"http://127.0.0.1:{hap_port}{path}",
                    [*backend_pids, hap_pid],
                    hap_pid,
                ),
            }
            runs: dict[str, list[Measurement]] = {name: [] for name in paths}
            # Rounds alternate between the paths, so a busy neighbour hurts all of them alike.
            for _ in range(args.rounds):
                for name, (url, pids, proxy) in paths.items():
                    runs[name].append(measure(url, pids, args.seconds, args.connections, proxy))
        finally:
            stack.stop()
    direct, ours, hap = (median(runs[name]) for name in ("direct", "balancer", "haproxy"))
    note = (
        f"{args.backends} {args.backend}s, {args.size} B segment, wrk -c{args.connections} "
        f"for every path, median of {args.rounds} interleaved rounds; direct = wrk straight to "
        f"b0, one of the {args.backends} {args.backend}s the balancer and haproxy front; proxy "
        f"CPU per request: balancer {ours[3]:.3f} ms, haproxy {hap[3]:.3f} ms; failed "
        f"requests: direct {direct[2]}, balancer {ours[2]}, haproxy {hap[2]}"
    )
    report.comparisons += [
        Comparison(
            "throughput vs direct",
            "req/s",
            ours[0],
            direct[0],
            f"direct to one of the {args.backends} {args.backend}s",
            goal_ratio=0.7,
            ours_per_cpu_second=ours[1],
            baseline_per_cpu_second=direct[1],
            notes=note,
        ),
        Comparison(
            "throughput vs haproxy",
            "req/s",
            ours[0],
            hap[0],
            "haproxy roundrobin",
            goal_ratio=0.8,
            ours_per_cpu_second=ours[1],
            baseline_per_cpu_second=hap[1],
            notes=note,
        ),
        Comparison(
            "requests per proxy CPU-second vs haproxy",
            "req/CPU-s",
            1000 / ours[3] if ours[3] else 0.0,
            1000 / hap[3] if hap[3] else 0.0,
            "haproxy roundrobin",
            goal_ratio=0.7,
            notes=note,
        ),
    ]
    report.extra["proxy_cpu_ms_per_request"] = {"balancer": ours[3], "haproxy": hap[3]}
    print(f"proxy CPU per request: balancer {ours[3]:.3f} ms, haproxy {hap[3]:.3f} ms")


async def _latencies(url: str, seconds: float, workers: int) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = await client.get(url)
            response.raise_for_status()
            samples.append(time.monotonic() - started)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(workers)))
    return samples


async def _side_by_side(
    balancers: dict[str, str], path: str, seconds: float
) -> dict[str, list[float]]:
    """Every strategy under the same load at the same time, so they share the conditions."""
    runs = [_latencies(url + path, seconds, 4) for url in balancers.values()]
    return dict(zip(balancers, await asyncio.gather(*runs), strict=True))


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(0.95 * (len(ordered) - 1))] * 1000


def slow_backend(args: argparse.Namespace, report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-balancer-") as tmp:
        stack = Stack(Path(tmp))
        try:
            path = put_segment(stack, args.size)
            backends, _ = start_backends(stack, "origin", 3)
            balancers = {
                s: start_balancer(stack, backends, s)[0]
                for s in ("tiered", "round_robin", "least_connections")
            }
            time.sleep(2)
            httpx.put(
                f"{backends['b0']}/admin/fault",
                json={"delay_seconds": args.delay},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ).raise_for_status()
            time.sleep(2)
            results = asyncio.run(_side_by_side(balancers, path, args.seconds))
        finally:
            stack.stop()
    note = (
        f"3 origins, one delayed {args.delay * 1000:.0f} ms; 4 closed-loop viewers per strategy, "
        "all strategies at once"
    )
    for baseline in ("round_robin", "least_connections"):
        report.comparisons.append(
            Comparison(
                f"p95 with a slow backend vs {baseline}",
                "ms",
                p95(results["tiered"]),
                p95(results[baseline]),
                baseline,
                higher_is_better=False,
                notes=note,
            )
        )
    report.extra["slow_backend_requests"] = {s: len(v) for s, v in results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="Interleaved throughput rounds; the median counts"
    )
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--backend", choices=["edge", "origin"], default="edge")
    parser.add_argument("--size", type=int, default=64 * 1024, help="Segment bytes")
    parser.add_argument("--delay", type=float, default=0.25, help="Slow backend's added delay")
    parser.add_argument("--scenario", choices=["all", "throughput", "slow"], default="all")
    args = parser.parse_args(argv)
    report = Report("bench_balancer", command_line())
    if args.scenario in ("all", "throughput"):
        throughput(args, report)
    if args.scenario in ("all", "slow"):
        slow_backend(args, report)
    report.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
