"""Redirect benchmark, all in one run:

1. one redirector pinned to one core against nginx ``return 302`` pinned to the same core, wrk
   on the other core: requests/s and p99 at 64 connections. The redirector as shipped (its own
   uvloop + httptools server answering redirects in the parser callback), and the same server
   sending redirects through the FastAPI route (``REDIRECTOR_FAST_PATH=false``) to show what
   answering in the parser buys;
2. four redirectors behind nginx (the ``vsp up`` layout) on the whole machine against nginx
   ``return 302`` on the whole machine, wrk sharing the cores.

Every server is started first; then the measurements run in ``--rounds`` interleaved rounds so
that a busy neighbour hurts all of them alike, and the median round is reported.

    .venv/bin/python -m load_tests.bench_redirect --seconds 4 --rounds 3 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

from load_tests.harness import Comparison, CpuMeter, Report, WrkResult, command_line, wrk
from services.configs.proxies import Backend, render_nginx
from shared.db.migrate import upgrade
from tests.support.infra import drop_database
from tests.support.ports import free_port
from tests.support.processes import VSP, wait_http

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
PATH = "/?video=" + quote(VIDEO, safe="")
GOAL_SINGLE_RATIO = 0.6
GOAL_P99_MS = 5.0
GOAL_CLUSTER_RPS = 20_000

# A wrk result and the CPU seconds the measured servers used meanwhile.
Measured = tuple[WrkResult, float]

BASELINE_CONF = """\
worker_processes {workers};
pid {root}/baseline.pid;
error_log {root}/baseline-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {root}/b-body;
    proxy_temp_path {root}/b-proxy;
    fastcgi_temp_path {root}/b-fastcgi;
    uwsgi_temp_path {root}/b-uwsgi;
    scgi_temp_path {root}/b-scgi;
    server {{
        listen 127.0.0.1:{port};
        location = / {{
            add_header Cache-Control no-store always;
            return 302 http://cdn.test/s1/video/1488/xcg2djHckad.m3u8;
        }}
    }}
}}
"""


def taskset(cores: Sequence[int] | None) -> list[str]:
    if cores is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(map(str, cores))]


class Servers:
    """Processes of one benchmark, each in its own session; all stopped at the end."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def redirector(
        self,
        name: str,
        cores: Sequence[int] | None,
        *,
        fast_path: bool = True,
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self.start(
            name,
            [*taskset(cores), *VSP, "serve", "redirector", "--port", str(port)],
            {
                "REDIRECTOR_INSTANCE_ID": name,
                "REDIRECTOR_FAST_PATH": str(fast_path).lower(),
            },
        )
        return proc, f"http://127.0.0.1:{port}"

    def nginx(self, name: str, conf: str, cores: Sequence[int] | None) -> subprocess.Popen[bytes]:
        path = self.root / f"{name}.conf"
        path.write_text(conf)
        error_log = str(self.root / f"{name}-error.log")
        return self.start(
            name,
            [
                *taskset(cores),
                "nginx",
                "-p",
                str(self.root),
                "-e",
                error_log,
                "-c",
                str(path),
                "-g",
                "daemon off;",
            ],
        )

    def stop(self) -> None:
        # nginx has worker processes: signal the whole session.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


@contextmanager
def servers(root: Path, env: dict[str, str]) -> Iterator[Servers]:
    group = Servers(root, env)
    try:
        yield group
    finally:
        group.stop()


@dataclass
class Target:
    name: str
    url: str
    pids: list[int]
    cores: Sequence[int] | None
    runs: list[Measured] = field(default_factory=list)
    # Processes whose CPU per request is reported apart (wrk's always is), by role.
    roles: dict[str, list[int]] = field(default_factory=dict)
    cpu_per_request_us: list[dict[str, float]] = field(default_factory=list)

    def median(self) -> Measured:
        """The round with the median requests/s."""
        ordered = sorted(self.runs, key=lambda run: run[0].requests_per_second)
        return ordered[len(ordered) // 2]


def measure(target: Target, args: argparse.Namespace) -> None:
    """Warm up, then wrk for ``args.seconds``; adds the result and the servers' CPU seconds."""
    check = httpx.get(target.url, timeout=5)
    if check.status_code not in (301, 302):
        raise RuntimeError(f"{target.url} answered {check.status_code}: {check.text[:200]}")
    wrk(target.url, seconds=1, connections=args.connections, threads=2, cores=target.cores)
    role_meters = {role: CpuMeter(pids) for role, pids in target.roles.items()}
    wrk_before = _children_cpu()
    with CpuMeter(target.pids) as meter, ExitStack() as stack:
        for role_meter in role_meters.values():
            stack.enter_context(role_meter)
        result = wrk(
            target.url,
            seconds=args.seconds,
            connections=args.connections,
            threads=2,
            cores=target.cores,
        )
    requests = max(1.0, result.requests_per_second * args.seconds)
    costs = {"wrk": _children_cpu() - wrk_before}
    costs |= {role: role_meter.used for role, role_meter in role_meters.items()}
    target.cpu_per_request_us.append({k: round(v / requests * 1e6, 1) for k, v in costs.items()})
    if result.errors or result.non_2xx_3xx:
        print(
            f"warning: {target.name}: {result.errors} socket errors, "
            f"{result.non_2xx_3xx} bad answers"
        )
    print(
        f"{target.name}: {result.requests_per_second:,.0f} req/s, "
        f"p99 {result.latency_p99_ms} ms, server CPU {meter.used:.2f} s, "
        f"CPU per request (us) {target.cpu_per_request_us[-1]}",
        flush=True,
    )
    target.runs.append((result, meter.used))


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rounds(targets: list[Target], args: argparse.Namespace) -> None:
    for _ in range(args.rounds):
        for target in targets:
            measure(target, args)


def single_core(group: Servers, root: Path, args: argparse.Namespace) -> dict[str, Target]:
    """Each server on core 0, wrk on core 1."""
    server_core, load_core = [0], [1]
    targets: dict[str, Target] = {}
    variants = {"ours": True, "fastapi": False}
    started = {
        name: group.redirector(f"single-{name}", server_core, fast_path=fast_path)
        for name, fast_path in variants.items()
    }
    for name, (proc, base) in started.items():
        wait_http(f"{base}/readyz", proc=proc, timeout=90)
        targets[name] = Target(name, base + PATH, [proc.pid], load_core)
    port = free_port()
    proc = group.nginx(
        "baseline-1", BASELINE_CONF.format(workers=1, root=root, port=port), server_core
    )
    url = f"http://127.0.0.1:{port}{PATH}"
    wait_http(url, proc=proc, timeout=90, statuses=(302,))
    targets["nginx"] = Target("nginx, 1 worker", url, [proc.pid], load_core)
    return targets


def cluster(group: Servers, root: Path, args: argparse.Namespace) -> dict[str, Target]:
    """Four redirectors behind nginx, and nginx alone, each on the whole machine."""
    started = [group.redirector(f"redirector-{n}", None) for n in range(1, 5)]
    for proc, base in started:
        wait_http(f"{base}/readyz", proc=proc, timeout=90)
    port = free_port()
    conf = render_nginx(
        [
            Backend(f"redirector-{n}", base.removeprefix("http://"))
            for n, (_, base) in enumerate(started, start=1)
        ],
        listen=f"127.0.0.1:{port}",
        haproxy="127.0.0.1:9",
        pid=str(root / "front.pid"),
        error_log=str(root / "front-error.log"),
        temp_dir=str(root),
    )
    front = group.nginx("front", conf, None)
    url = f"http://127.0.0.1:{port}{PATH}"
    wait_http(url, proc=front, timeout=90, statuses=(302,))
    pids = [front.pid, *(proc.pid for proc, _ in started)]
    roles = {"nginx": [front.pid]} | {
        f"redirector-{n}": [proc.pid] for n, (proc, _) in enumerate(started, start=1)
    }
    targets = {"cluster": Target("4 redirectors behind nginx", url, pids, None, roles=roles)}
    port = free_port()
    proc = group.nginx("baseline-2", BASELINE_CONF.format(workers=2, root=root, port=port), None)
    url = f"http://127.0.0.1:{port}{PATH}"
    wait_http(url, proc=proc, timeout=90, statuses=(302,))
    targets["nginx"] = Target("nginx, 2 workers", url, [proc.pid], None)
    return targets


def per_cpu_second(run: Measured, seconds: float) -> float:
    result, cpu = run
    return result.requests_per_second * seconds / cpu if cpu else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write results/bench_redirect.json."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_redirect")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH. Install: apt-get install {tool}")

    database = f"vsp_bench_redirect_{os.getpid()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        "REDIRECTOR_CDN_HOST": "cdn.test",
        "REDIRECTOR_RATIO": "5",
        "LOG_LEVEL": "WARNING",
    }
    upgrade(env["DATABASE_URL"])
    root = Path(tempfile.mkdtemp(prefix="vsp-bench-redirect-"))
    load_before = os.getloadavg()
    try:
        with servers(root, env) as group:
            single = single_core(group, root, args)
            rounds(list(single.values()), args)
        both: dict[str, Target] = {}
        if not args.skip_cluster:
            with servers(root, env) as group:
                both = cluster(group, root, args)
                rounds(list(both.values()), args)
    finally:
        asyncio.run(drop_database(database))
        shutil.rmtree(root, ignore_errors=True)

    s = args.seconds
    ours, fastapi, ngx = (single[k].median() for k in ("ours", "fastapi", "nginx"))
    report = Report("bench_redirect", command_line())
    report.comparisons += [
        Comparison(
            "1 core: redirects/s",
            "req/s",
            ours[0].requests_per_second,
            ngx[0].requests_per_second,
            "nginx return 302, 1 worker",
            goal_ratio=GOAL_SINGLE_RATIO,
            ours_per_cpu_second=per_cpu_second(ours, s),
            baseline_per_cpu_second=per_cpu_second(ngx, s),
        ),
        Comparison(
            "1 core: p99 latency",
            "ms",
            ours[0].latency_p99_ms or 0,
            GOAL_P99_MS,
            f"the {GOAL_P99_MS:g} ms goal",
            higher_is_better=False,
            goal_ratio=1.0,
            notes=f"nginx p99 {ngx[0].latency_p99_ms} ms",
        ),
    ]
    report.comparisons.append(
        Comparison(
            "1 core: redirect path vs FastAPI route",
            "req/s",
            ours[0].requests_per_second,
            fastapi[0].requests_per_second,
            "same server, FastAPI route",
            ours_per_cpu_second=per_cpu_second(ours, s),
            baseline_per_cpu_second=per_cpu_second(fastapi, s),
            notes=f"FastAPI p99 {fastapi[0].latency_p99_ms} ms",
        )
    )
    if both:
        front, ngx2 = both["cluster"].median(), both["nginx"].median()
        report.comparisons += [
            Comparison(
                "2 cores: 4 redirectors behind nginx",
                "req/s",
                front[0].requests_per_second,
                ngx2[0].requests_per_second,
                "nginx return 302, 2 workers",
                ours_per_cpu_second=per_cpu_second(front, s),
                baseline_per_cpu_second=per_cpu_second(ngx2, s),
                notes=f"p99 {front[0].latency_p99_ms} ms",
            ),
            Comparison(
                "2 cores: 4 redirectors behind nginx vs goal",
                "req/s",
                front[0].requests_per_second,
                GOAL_CLUSTER_RPS,
                "the 20,000 req/s goal",
                goal_ratio=1.0,
            ),
        ]
    report.extra = {
        "seconds": s,
        "rounds": args.rounds,
        "connections": args.connections,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "runs": {
            t.name: [
                vars(r) | {"server_cpu_seconds": round(cpu, 3), "cpu_per_request_us": per_role}
                for (r, cpu), per_role in zip(t.runs, t.cpu_per_request_us, strict=True)
            ]
            for t in [*single.values(), *both.values()]
        },
    }
    report.write()


if __name__ == "__main__":
    main()
