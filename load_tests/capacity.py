"""How many simulated viewers the running suite sustains before viewers notice.

Runs the `viewers` Locust scenario headless at growing user counts against the running suite
(`make up`), and keeps the largest count whose viewers saw a stall ratio under 1% and a startup
p95 under 2 s with no HTTP failures. Each step writes its summary; the last line is the answer.

    .venv/bin/python -m load_tests.capacity --steps 100 200 400 600 800 --duration 45s
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from tests.support.paths import ROOT

RESULTS = ROOT / "results"


def run_step(users: int, duration: str, spawn_rate: int) -> dict:
    """One headless Locust run; returns the viewer summary it wrote."""
    summary = RESULTS / "viewers_summary.json"
    summary.unlink(missing_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "load_tests/scenarios/viewers.py",
            "--headless",
            "-u",
            str(users),
            "-r",
            str(spawn_rate),
            "-t",
            duration,
            "--stop-timeout",
            "5",
            "--only-summary",
            "--csv",
            str(RESULTS / f"capacity_{users}"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        stdout=subprocess.DEVNULL,
    )
    data: dict = json.loads(summary.read_text()) if summary.exists() else {"sessions": 0}
    return data


def sustained(s: dict) -> bool:
    """Viewers did not notice: stalls under 1%, startup p95 under 2 s, no failures."""
    return (
        s.get("sessions", 0) > 0
        and s.get("stall_ratio", 1) < 0.01
        and (s.get("startup_p95_seconds") or 99) < 2
        and not s.get("http_failures")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 600, 800])
    parser.add_argument("--duration", default="45s")
    parser.add_argument("--spawn-rate", type=int, default=50)
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    best = 0
    rows = []
    for users in args.steps:
        s = run_step(users, args.duration, args.spawn_rate)
        ok = sustained(s)
        rows.append({**s, "users": users, "sustained": ok})
        print(
            f"{users:5d} viewers: stall ratio {s.get('stall_ratio')}, startup p95 "
            f"{s.get('startup_p95_seconds')}, failures {s.get('http_failures')}, "
            f"segment time ratio mean {s.get('segment_time_ratio_mean')} -> "
            f"{'sustained' if ok else 'viewers notice'}",
            flush=True,
        )
        if ok:
            best = users
        else:
            break
    (RESULTS / "capacity.json").write_text(json.dumps({"steps": rows, "sustained": best}, indent=2))
    print(f"most viewers sustained: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
