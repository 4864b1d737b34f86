"""What every benchmark shares: a load generator, server CPU accounting and one result format.

A benchmark compares our component with a baseline measured side by side in the same run and
reports the ratio, plus each server's throughput per CPU-second it used: on this machine a single
load-generator thread saturates before nginx does, so a throughput ratio alone flatters the
slower server.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.support.processes import Processes

RESULTS = Path(os.environ.get("VSP_RESULTS_DIR", "results"))


@dataclass
class Comparison:
    """One measured quantity for our server and the baseline."""

    name: str
    unit: str
    ours: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True
    goal_ratio: float | None = None
    ours_per_cpu_second: float | None = None
    baseline_per_cpu_second: float | None = None
    notes: str = ""

    @property
    def ratio(self) -> float:
        """ours / baseline for quantities where more is better, baseline / ours otherwise."""
        if self.higher_is_better:
            return self.ours / self.baseline if self.baseline else float("inf")
        return self.baseline / self.ours if self.ours else float("inf")

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal_ratio is None else self.ratio >= self.goal_ratio

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4), "meets_goal": self.meets_goal}


@dataclass
class Report:
    benchmark: str
    command: str
    comparisons: list[Comparison] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self) -> Path:
        """Write results/<benchmark>.json and print the table."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.benchmark}.json"
        payload = {
            "benchmark": self.benchmark,
            "command": self.command,
            "machine": machine(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "comparisons": [c.as_dict() for c in self.comparisons],
            "extra": self.extra,
        }
        path.write_text(json.dumps(payload, indent=2))
        print(table(self.benchmark, self.comparisons))
        print(f"(written to {path})")
        return path


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "python_prefix": sys.base_prefix,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def table(title: str, comparisons: Sequence[Comparison]) -> str:
    """A Markdown table of the comparisons."""
    lines = [
        f"### {title}",
        "",
        "| measurement | ours | baseline | ratio | goal | ours per CPU-s | baseline per CPU-s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        goal = (
            ""
            if c.goal_ratio is None
            else f">= {c.goal_ratio:g}x " + ("(met)" if c.meets_goal else "(missed)")
        )
        per = [
            f"{v:,.1f}" if v is not None else ""
            for v in (c.ours_per_cpu_second, c.baseline_per_cpu_second)
        ]
        lines.append(
            f"| {c.name} | {c.ours:,.2f} {c.unit} | {c.baseline:,.2f} {c.unit} "
            f"({c.baseline_name}) | {c.ratio:.2f}x | {goal} | {per[0]} | {per[1]} |"
        )
    return "\n".join(lines)


def command_line() -> str:
    """How this benchmark was invoked, for the record."""
    if not sys.argv:
        return ""
    script = Path(sys.argv[0])
    module = f"load_tests.{script.stem}" if script.parent.name == "load_tests" else str(script)
    return " ".join([".venv/bin/python", "-m", module, *sys.argv[1:]])


class CpuMeter:
    """CPU seconds used by a set of processes (and their children) over a block."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.used = 0.0

    def _total(self) -> float:
        total = 0.0
        for proc in self.procs:
            family = [proc]
            try:
                family += proc.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for member in family:
                try:
                    t = member.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
        return total

    def __enter__(self) -> CpuMeter:
        self._start = self._total()
        return self

    def __exit__(self, *_: object) -> None:
        self.used = self._total() - self._start


def pin(pid: int, cores: Sequence[int]) -> None:
    """Pin a process (and its threads) to ``cores``."""
    if shutil.which("taskset"):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", ",".join(map(str, cores)), str(pid)],
            check=False,
            capture_output=True,
        )
    else:
        psutil.Process(pid).cpu_affinity(list(cores))


@dataclass
class WrkResult:
    requests_per_second: float
    bytes_per_second: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    errors: int
    non_2xx_3xx: int


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str,
    *,
    seconds: float = 5,
    connections: int = 64,
    threads: int = 2,
    cores: Sequence[int] | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """Run wrk (pinned to ``cores`` when given) and parse its summary."""
    args = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(seconds))}s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    if cores is not None and shutil.which("taskset"):
        args = ["taskset", "-c", ",".join(map(str, cores)), *args]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    bps = float(tr.group(1)) * _UNITS[tr.group(2)] if tr else 0.0
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps,
        bps,
        _ms(p50.group(1)) if p50 else None,
        _ms(p99.group(1)) if p99 else None,
        sum(int(g) for g in errors.groups()) if errors else 0,
        int(non2xx.group(1)) if non2xx else 0,
    )


def require_tools(*tools: str) -> None:
    """Exit, saying how to install it, if one of ``tools`` is not on PATH."""
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH. Install: apt-get install {tool}")


class ProcessStack:
    """The processes of one benchmark run, logging under ``root`` and storing objects in
    ``root``/objects; ``stop`` ends them all."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.processes = Processes(
            root,
            {
                **os.environ,
                "STORAGE_BACKEND": "fs",
                "STORAGE_ROOT": str(root / "objects"),
                "LOG_LEVEL": "WARNING",
                **env,
            },
            timeout=180,
        )

    def start(
        self, name: str, args: list[str], ready: str | None, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start ``args``; with ``ready``, wait until that URL answers 200 (up to 3 min)."""
        return self.processes.start(name, args, ready_url=ready, env=env).popen

    def stop(self) -> None:
        self.processes.stop_all()
