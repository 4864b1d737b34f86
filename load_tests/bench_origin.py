"""Signed segment serving by the origin against nginx serving the same files, in one run.

Every server is one process (nginx: one worker with sendfile; the origin: one Granian worker
with ``ORIGIN_RUNTIME_THREADS`` I/O threads, or one uvicorn process) serving the same files:
``--segments`` random segments of ``--size-mib`` MiB under one video's prefix. wrk drives each in
turn, cycling through the segments, for ``--rounds`` interleaved rounds. Server CPU time is read
from /proc around each run, so MiB per CPU-second can be compared on a busy machine too.

Rows:
- nginx: plain static files, no signature check (the baseline).
- origin (query): ``/origin/<path>?exp=&sig=&kid=`` under Granian (the default server), the
  signature checked on every request, the file handed over by ``http.response.pathsend``.
- origin (token): ``/origin/t/<token>/<path>``, the path token checked on every request.
- origin uvicorn: the same origin under uvicorn (``ORIGIN_SERVER=uvicorn``): bytes read and
  written by Python.
- framework route: the signature check and ``shared.http.delivery.object_response`` behind a FastAPI
  route under uvicorn, what the plain-ASGI hot path replaced (``--no-framework`` skips it).

Usage: ``python -m load_tests.bench_origin --seconds 5 --connections 8``; prints a table and
writes ``results/bench_origin.json`` (the harness format ``make bench`` collects).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from load_tests.harness import Comparison, Report
from shared.core.signing import Signer
from shared.http.delivery import object_response
from shared.storage.filesystem import FilesystemStore
from tests.support.ports import free_port
from tests.support.processes import wait_http

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-signing-secret-0123456789"
UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def framework_app() -> FastAPI:
    """The hot path as a FastAPI route (the baseline the plain-ASGI path is measured against)."""
    app = FastAPI()
    store = FilesystemStore(Path(os.environ["BENCH_STORAGE_ROOT"]))
    signer = Signer({"k1": SECRET}, "k1")

    @app.get("/origin/{path:path}")
    async def serve(
        path: str,
        request: Request,
        exp: Annotated[str | None, Query()] = None,
        sig: Annotated[str | None, Query()] = None,
        kid: Annotated[str | None, Query()] = None,
    ) -> Response:
        signer.verify(path, exp, sig, kid)
        return await object_response(
            store, path, request, cache_control="public, max-age=31536000, immutable"
        )

    return app


@dataclass
class Result:
    name: str
    round: int
    requests_per_second: float
    mib_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu_seconds: float
    seconds: float

    @property
    def mib_per_cpu_second(self) -> float:
        """Throughput per second of server CPU: what survives a machine shared with others."""
        return self.mib_per_second * self.seconds / max(self.server_cpu_seconds, 1e-9)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its children (nginx's worker)."""
    proc = psutil.Process(pid)
    total = 0.0
    for each in [proc, *proc.children(recursive=True)]:
        times = each.cpu_times()
        total += times.user + times.system
    return total


def seconds_of(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, MiB/s, latency percentiles and errors from wrk's report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", output)
    assert transfer, output
    mib = float(transfer.group(1)) * UNITS[transfer.group(2)] / 1024**2
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": rps,
        "mib": mib,
        "p50": seconds_of(p50.group(1)) * 1000 if p50 else float("nan"),
        "p99": seconds_of(p99.group(1)) * 1000 if p99 else float("nan"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def lua_script(folder: Path, name: str, paths: list[str]) -> Path:
    """A wrk script cycling through ``paths``."""
    script = folder / f"{name}.lua"
    listed = ",\n".join(json.dumps(p) for p in paths)
    script.write_text(
        f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n"
    )
    return script


def run_wrk(
    base: str, script: Path, *, seconds: float, connections: int, threads: int
) -> dict[str, float]:
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(done.stdout)


def make_files(root: Path, video_prefix: str, count: int, size: int) -> dict[str, str]:
    """Random segment files; returns object key -> sha256."""
    digests: dict[str, str] = {}
    for i in range(count):
        key = f"{video_prefix}hls/720p/seg_{i:05d}.m4s"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        digests[key] = hashlib.sha256(data).hexdigest()
    return digests


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table and writes ``results/bench_origin.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--size-mib", type=float, default=2)
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--no-framework", action="store_true", help="skip the FastAPI baseline")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        print("bench_origin needs wrk and nginx on PATH", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="vsp-bench-origin-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    objects = work / "objects"
    prefix = f"videos/{uuid.uuid4()}/"
    size = int(args.size_mib * 1024 * 1024)
    digests = make_files(objects, prefix, args.segments, size)
    keys = sorted(digests)
    signer = Signer({"k1": SECRET}, "k1")
    token = signer.make_token(prefix, 3600)
    query_paths = [f"/origin/{k}?{signer.sign(k, 3600).query()}" for k in keys]
    # Row name -> (server, request paths).
    rows: dict[str, tuple[str, list[str]]] = {
        "nginx": ("nginx", [f"/origin/{k}" for k in keys]),
        "origin (query)": ("origin", query_paths),
        "origin (token)": ("origin", [f"/origin/t/{token}/{k}" for k in keys]),
        "origin uvicorn": ("origin-uvicorn", query_paths),
    }
    if not args.no_framework:
        rows["framework route"] = ("framework", query_paths)
    ports = {server: free_port() for server, _ in rows.values()}
    env = {
        **os.environ,
        "STORAGE_BACKEND": "fs",
        "STORAGE_ROOT": str(objects),
        "BENCH_STORAGE_ROOT": str(objects),
        "SIGNING_SECRET": SECRET,
        "SIGNING_KEY_ID": "k1",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    (work / "nginx.conf").write_text(
        f"""daemon off; worker_processes {args.nginx_workers}; pid {work}/nginx.pid;
error_log {work}/nginx.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; types {{ video/iso.segment m4s; }}
  server {{ listen 127.0.0.1:{ports["nginx"]}; location /origin/ {{ alias {objects}/; }} }}
}}
"""
    )
    python = sys.executable
    vsp_origin = [python, "-m", "services.cli.main", "serve", "origin", "--port"]
    commands = {
        "nginx": (["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)], {}),
        "origin": ([*vsp_origin, str(ports["origin"])], {"ORIGIN_SERVER": "granian"}),
        "origin-uvicorn": (
            [*vsp_origin, str(ports["origin-uvicorn"])],
            {"ORIGIN_SERVER": "uvicorn"},
        ),
        "framework": (
            [python, "-m", "uvicorn", "load_tests.bench_origin:framework_app", "--factory",
             "--port", str(ports.get("framework", 0)), "--log-level", "warning",
             "--no-access-log"],
            {},
        ),
    }  # fmt: skip
    servers: dict[str, subprocess.Popen[bytes]] = {}
    results: list[Result] = []
    try:
        for server in ports:
            args_, extra = commands[server]
            servers[server] = start(args_, {**env, **extra}, work / f"{server}.log")
        for server, proc in servers.items():
            try:
                wait_http(
                    f"http://127.0.0.1:{ports[server]}/healthz",
                    proc=proc,
                    timeout=120,
                    statuses=range(500),
                )
            except (RuntimeError, TimeoutError) as exc:
                log = (work / f"{server}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{server} did not start: {exc}\n{log}") from None
        # Every server must serve the stored bytes before its speed means anything.
        with httpx.Client() as client:
            for name, (server, listed) in rows.items():
                for key, path in zip(keys, listed, strict=True):
                    body = client.get(f"http://127.0.0.1:{ports[server]}{path}").content
                    if hashlib.sha256(body).hexdigest() != digests[key]:
                        raise RuntimeError(f"{name} served wrong bytes for {key}")
        scripts = {
            name: lua_script(work, f"s{i}", listed)
            for i, (name, (_, listed)) in enumerate(rows.items())
        }
        for round_number in range(1, args.rounds + 1):
            for name, (server, _) in rows.items():
                cpu_before = cpu_seconds(servers[server].pid)
                measured = run_wrk(
                    f"http://127.0.0.1:{ports[server]}",
                    scripts[name],
                    seconds=args.seconds,
                    connections=args.connections,
                    threads=args.threads,
                )
                results.append(
                    Result(
                        name,
                        round_number,
                        measured["rps"],
                        measured["mib"],
                        measured["p50"],
                        measured["p99"],
                        int(measured["non_2xx"]),
                        int(measured["socket_errors"]),
                        cpu_seconds(servers[server].pid) - cpu_before,
                        args.seconds,
                    )
                )
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(results)
    print_table(summary, args)
    report(summary, results, args, argv).write()
    bad = [r for r in results if r.non_2xx or r.socket_errors]
    return 1 if bad else 0


def report(
    summary: list[dict[str, Any]],
    results: list[Result],
    args: argparse.Namespace,
    argv: list[str] | None,
) -> Report:
    """The harness report (results/bench_origin.json) that ``make bench`` collects."""
    rows = {row["name"]: row for row in summary}

    def compare(name: str, ours: str, baseline: str, goal: float | None = None) -> Comparison:
        return Comparison(
            name=name,
            unit="MiB/s",
            ours=rows[ours]["mib_per_second"],
            baseline=rows[baseline]["mib_per_second"],
            baseline_name=baseline,
            goal_ratio=goal,
            ours_per_cpu_second=rows[ours]["mib_per_cpu_second"],
            baseline_per_cpu_second=rows[baseline]["mib_per_cpu_second"],
        )

    comparisons = [
        compare("2 MiB signed segments, query signature", "origin (query)", "nginx", 0.7),
        compare("2 MiB segments, path token", "origin (token)", "nginx"),
        compare("2 MiB signed segments under uvicorn", "origin uvicorn", "nginx"),
    ]
    if "framework route" in rows:
        comparisons.append(
            compare("plain ASGI vs FastAPI route (uvicorn)", "origin uvicorn", "framework route")
        )
    return Report(
        benchmark="bench_origin",
        command=" ".join(["python -m load_tests.bench_origin", *(argv or sys.argv[1:])]),
        comparisons=comparisons,
        extra={
            "settings": {k: str(v) for k, v in vars(args).items()},
            "load_average": os.getloadavg(),
            "summary": summary,
            "runs": [{**asdict(r), "mib_per_cpu_second": r.mib_per_cpu_second} for r in results],
        },
    )


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """Mean per server over the rounds, with the ratio to nginx's MiB/s."""
    names = list(dict.fromkeys(r.name for r in results))
    rows: list[dict[str, Any]] = []
    for name in names:
        mine = [r for r in results if r.name == name]
        rows.append(
            {
                "name": name,
                "requests_per_second": sum(r.requests_per_second for r in mine) / len(mine),
                "mib_per_second": sum(r.mib_per_second for r in mine) / len(mine),
                "latency_p50_ms": sum(r.latency_p50_ms for r in mine) / len(mine),
                "latency_p99_ms": sum(r.latency_p99_ms for r in mine) / len(mine),
                "errors": sum(r.non_2xx + r.socket_errors for r in mine),
                "mib_per_cpu_second": sum(r.mib_per_second * r.seconds for r in mine)
                / max(sum(r.server_cpu_seconds for r in mine), 1e-9),
            }
        )
    nginx = next((r for r in rows if r["name"] == "nginx"), None)
    for row in rows:
        row["vs_nginx"] = row["mib_per_second"] / nginx["mib_per_second"] if nginx else None
        row["cpu_vs_nginx"] = (
            row["mib_per_cpu_second"] / nginx["mib_per_cpu_second"] if nginx else None
        )
    return rows


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.size_mib:g} MiB segments, {args.connections} connections, "
        f"{args.rounds} x {args.seconds:g} s per server, nginx workers: {args.nginx_workers}\n"
    )
    header = (
        f"{'server':<18}{'req/s':>8}{'MiB/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'vs nginx':>10}"
        f"{'MiB/CPU-s':>11}{'vs nginx':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row['vs_nginx']:.2f}x" if row["vs_nginx"] is not None else "-"
        cpu_ratio = f"{row['cpu_vs_nginx']:.2f}x" if row["cpu_vs_nginx"] is not None else "-"
        print(
            f"{row['name']:<18}{row['requests_per_second']:>8.0f}{row['mib_per_second']:>8.0f}"
            f"{row['latency_p50_ms']:>8.1f}{row['latency_p99_ms']:>8.1f}{ratio:>10}"
            f"{row['mib_per_cpu_second']:>11.0f}{cpu_ratio:>10}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
