"""Edge benchmark, all in one run against one origin:

1. cache hits: the edge vs nginx ``proxy_cache`` in front of the same origin, same wrk, each
   server pinned to one core and wrk to the other: MB/s for a 2 MiB segment, requests/s for a
   200 KiB segment;
2. hit ratio of a Zipf-distributed viewer workload over 2 edges behind haproxy, consistent
   hashing on the path vs round robin (fresh edges for each, same request sequence);
3. next-segment prefetch: what a viewer playing segments in order sees, prefetch off vs on.

    .venv/bin/python -m load_tests.bench_edge --seconds 5 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from load_tests.harness import (
    Comparison,
    CpuMeter,
    ProcessStack,
    Report,
    command_line,
    pin,
    require_tools,
    wrk,
)
from services.configs.proxies import Backend, HaproxyBalance, render_haproxy
from shared.core.signing import Signer
from shared.storage.filesystem import FilesystemStore
from tests.support.ports import free_port
from tests.support.processes import VSP
from tests.support.signing import signer_of

HITS = {"HIT", "STALE", "COALESCED", "REVALIDATED"}

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {root}/nginx-body;
    proxy_temp_path {root}/nginx-proxy-temp;
    fastcgi_temp_path {root}/nginx-fastcgi;
    uwsgi_temp_path {root}/nginx-uwsgi;
    scgi_temp_path {root}/nginx-scgi;
    proxy_cache_path {root}/nginx-cache levels=1:2 keys_zone=edge:16m max_size=1g inactive=1h
                     use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 "ok"; }}
        location /origin/ {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_key $uri;
            proxy_cache_lock on;
            proxy_cache_use_stale error timeout updating http_502 http_503 http_504;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


class Stack(ProcessStack):
    """Origin, edges, nginx and haproxy of one run."""

    def service(self, name: str, tag: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [*VSP, "serve", name, "--port", str(port)]
        return url, self.start(f"{name}-{tag}", args, f"{url}/healthz", **env)

    def edge(self, origin: str, tag: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        return self.service(
            "edge",
            tag,
            EDGE_ID=tag,
            EDGE_ORIGIN_URL=origin,
            EDGE_CACHE_DIR=str(self.root / f"cache-{tag}"),
            **env,
        )

    def nginx(self, origin_port: int) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        conf = self.root / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(
            NGINX_CONF.format(root=self.root, port=port, origin_port=origin_port, user=user)
        )
        url = f"http://127.0.0.1:{port}"
        args = ["nginx", "-p", str(self.root), "-c", str(conf)]
        proc = self.start("nginx", args, url + "/healthz")
        return url, proc

    def haproxy(self, edges: list[str], balance: HaproxyBalance) -> str:
        port = free_port()
        conf = self.root / f"haproxy-{balance}.cfg"
        backends = [Backend(f"e{i}", e.removeprefix("http://")) for i, e in enumerate(edges)]
        conf.write_text(render_haproxy(backends, bind=f"127.0.0.1:{port}", balance=balance))
        url = f"http://127.0.0.1:{port}"
        self.start(
            f"haproxy-{balance}", ["haproxy", "-db", "-f", str(conf)], url + "/haproxy/healthz"
        )
        return url


def process_tree(proc: subprocess.Popen[bytes]) -> list[int]:
    """``proc`` and its descendants: nginx's workers, Granian's worker process."""
    import psutil

    return [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]


def put_objects(root: Path, objects: dict[str, bytes]) -> None:
    async def put() -> None:
        store = FilesystemStore(root / "objects")
        for key, data in objects.items():
            await store.put_bytes(key, data, "video/iso.segment")

    asyncio.run(put())


def _hits(
    server: str,
    base: str,
    pids: list[int],
    key: str,
    query: str,
    unit: str,
    seconds: float,
    connections: int,
) -> tuple[float, float]:
    """(value, value per CPU-second) of wrk asking ``server`` for one cached object."""
    url = f"{base}/origin/{key}?{query}"
    for _ in range(2):
        httpx.get(url, timeout=30).raise_for_status()
    assert httpx.get(url).headers["x-cache"] == "HIT", f"{server} does not cache {key}"
    with CpuMeter(pids) as cpu:
        run = wrk(url, seconds=seconds, connections=connections, threads=1, cores=[0])
    if run.errors or run.non_2xx_3xx:
        raise RuntimeError(f"{server}: {run}")
    value = run.bytes_per_second / 1e6 if unit == "MB/s" else run.requests_per_second
    return value, value * seconds / max(cpu.used, 1e-9)


def hit_throughput(
    stack: Stack, signer: Signer, origin: str, seconds: float, connections: int
) -> list[Comparison]:
    """Cache-hit throughput of the edge and of nginx proxy_cache, one core each."""
    big = "videos/bench/hls/1080p/seg_00001.m4s"
    small = "videos/bench/hls/480p/seg_00001.m4s"
    put_objects(stack.root, {big: os.urandom(2 * 1024 * 1024), small: os.urandom(200 * 1024)})
    edge, edge_proc = stack.edge(origin, "edge-hits", EDGE_PREFETCH_NEXT_SEGMENT="false")
    nginx, nginx_proc = stack.nginx(int(origin.rsplit(":", 1)[1]))
    # CPU is metered over each tree from its root; all of every tree is pinned.
    servers = {
        "edge": (edge, [edge_proc.pid]),
        "nginx": (nginx, process_tree(nginx_proc)[1:]),
    }
    for proc in (edge_proc, nginx_proc):
        for pid in process_tree(proc):
            pin(pid, [1])
    results: list[Comparison] = []
    for key, name, unit, goal, others in (
        (big, "cache-hit MB/s, 2 MiB segment", "MB/s", 0.9, ("nginx",)),
        (small, "cache-hit requests/s, 200 KiB segment", "req/s", 0.8, ("nginx",)),
    ):
        query = signer.sign(key, 3600).query()
        measured = {
            server: _hits(server, *servers[server], key, query, unit, seconds, connections)
            for server in ("edge", *others)
        }
        results.append(
            Comparison(
                name,
                unit,
                measured["edge"][0],
                measured["nginx"][0],
                "nginx proxy_cache",
                goal_ratio=goal,
                ours_per_cpu_second=measured["edge"][1],
                baseline_per_cpu_second=measured["nginx"][1],
                notes="one core per server, wrk on the other; the edge also checks the HMAC",
            )
        )
    return results


def zipf_sequence(objects: int, requests: int, exponent: float, seed: int) -> list[int]:
    """Object ranks drawn from a Zipf law (rank r with weight 1 / r^exponent)."""
    weights = [1 / (rank**exponent) for rank in range(1, objects + 1)]
    return random.Random(seed).choices(range(objects), weights=weights, k=requests)


async def _play(front: str, urls: list[str], concurrency: int) -> Counter[str]:
    results: Counter[str] = Counter()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    async with httpx.AsyncClient(timeout=30) as client:

        async def viewer() -> None:
            while not queue.empty():
                response = await client.get(queue.get_nowait())
                response.raise_for_status()
                results[response.headers["x-cache"]] += 1

        await asyncio.gather(*(viewer() for _ in range(concurrency)))
    return results


def hit_ratios(
    stack: Stack, signer: Signer, origin: str, objects: int, requests: int, cap_objects: int
) -> Comparison:
    """Zipf workload over 2 small edges: consistent hashing vs round robin."""
    size = 16 * 1024
    keys = [f"videos/zipf/hls/360p/obj_{i:04d}.bin" for i in range(objects)]
    put_objects(stack.root, {k: os.urandom(size) for k in keys})
    sequence = zipf_sequence(objects, requests, 1.0, seed=7)
    # Each cached object takes its body and metadata file, block-rounded.
    cap = cap_objects * (size + 4096)
    ratios: dict[str, float] = {}
    for balance in ("consistent", "roundrobin"):
        edges = [
            stack.edge(origin, f"zipf-{balance}-{i}", EDGE_CACHE_MAX_BYTES=str(cap))[0]
            for i in range(2)
        ]
        front = stack.haproxy(edges, balance)  # type: ignore[arg-type]
        urls = [f"{front}/origin/{keys[i]}?{signer.sign(keys[i], 3600).query()}" for i in sequence]
        results = asyncio.run(_play(front, urls, 8))
        ratios[balance] = sum(results[r] for r in HITS) / sum(results.values())
    return Comparison(
        f"hit ratio, Zipf(1.0) over {objects} objects, {requests} requests, 2 edges",
        "ratio",
        ratios["consistent"],
        ratios["roundrobin"],
        "round robin",
        notes=f"each edge holds {cap_objects} objects",
    )


def prefetch_effect(stack: Stack, signer: Signer, origin: str, segments: int) -> Comparison:
    """Share of in-order segment requests a viewer finds cached, prefetch off vs on."""
    shares: dict[str, float] = {}
    for prefetch in ("false", "true"):
        prefix = f"videos/prefetch-{prefetch}/hls/720p/"
        keys = [f"{prefix}seg_{i:05d}.m4s" for i in range(segments)]
        put_objects(stack.root, {k: os.urandom(256 * 1024) for k in keys})
        edge, _ = stack.edge(origin, f"prefetch-{prefetch}", EDGE_PREFETCH_NEXT_SEGMENT=prefetch)
        cached = 0
        with httpx.Client(timeout=30) as client:
            for key in keys:
                response = client.get(f"{edge}/origin/{key}?{signer.sign(key, 3600).query()}")
                response.raise_for_status()
                cached += response.headers["x-cache"] in HITS
                # A player asks for the next segment well after the previous one arrived.
                time.sleep(0.05)
        shares[prefetch] = cached / segments
    return Comparison(
        f"in-order segments found cached ({segments} segments, 50 ms apart)",
        "share",
        shares["true"],
        shares["false"],
        "prefetch off",
    )


def main(argv: list[str] | None = None) -> None:
    """Run the edge benchmark and write results/bench_edge.json."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_edge")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--zipf-objects", type=int, default=400)
    parser.add_argument("--zipf-requests", type=int, default=4000)
    parser.add_argument("--edge-cap-objects", type=int, default=60)
    parser.add_argument("--prefetch-segments", type=int, default=20)
    args = parser.parse_args(argv)
    require_tools("wrk", "nginx", "haproxy")
    signer = signer_of()
    root = Path(tempfile.mkdtemp(prefix="vsp-bench-edge-"))
    stack = Stack(root)
    try:
        origin, _ = stack.service("origin", "origin")
        report = Report("bench_edge", command_line())
        report.comparisons += hit_throughput(stack, signer, origin, args.seconds, args.connections)
        report.comparisons.append(
            hit_ratios(
                stack, signer, origin, args.zipf_objects, args.zipf_requests, args.edge_cap_objects
            )
        )
        report.comparisons.append(prefetch_effect(stack, signer, origin, args.prefetch_segments))
        report.write()
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
