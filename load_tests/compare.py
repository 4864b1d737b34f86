"""Every benchmark of ``make bench`` for an earlier commit and for this tree, side by side.

A change that should cost no speed (a new layout, a shared module in place of two copies) is
checked here: the earlier commit is exported into a temporary folder with its own locked
environment, then each benchmark runs for both trees, alternating which goes first from round to
round, on the same machine in the same minutes. Each side's figure is its ratio to the baseline
measured in its own run (nginx, haproxy, bare ffmpeg), so the comparison does not move with the
machine's load; the table gives old, new and the change.

    python -m load_tests.compare --base 571cb1c            # every benchmark, one round
    python -m load_tests.compare --base HEAD~3 --only bench_edge bench_origin --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load_tests.harness import RESULTS
from load_tests.run_all import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.05


def export_tree(rev: str, into: Path) -> Path:
    """``rev``'s files in ``into``, with the environment its lock file describes."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    subprocess.run([uv, "sync", "--frozen", "--quiet"], cwd=into, check=True)
    return into


def run_benchmark(tree: Path, module: str, args: list[str], results: Path) -> dict[str, Any]:
    """Run one benchmark module of ``tree``; its comparisons by name, or {} if it failed."""
    for stale in results.glob(f"{module}*.json"):
        stale.unlink()
    env = {**os.environ, "VSP_RESULTS_DIR": str(results)}
    python = tree / ".venv" / "bin" / "python"
    code = subprocess.call([str(python), "-m", f"load_tests.{module}", *args], cwd=tree, env=env)
    found = sorted(results.glob(f"{module}*.json"), key=lambda p: p.stat().st_mtime)
    if code != 0 or not found:
        print(f"  {tree.name}: {module} failed (exit {code})", flush=True)
        return {}
    data = json.loads(found[-1].read_text())
    return {c["name"]: c for c in data.get("comparisons", [])}


def table(rows: list[dict[str, Any]], base: str) -> list[str]:
    """Markdown rows: each comparison's ratio for the earlier commit and this tree."""
    lines = [
        f"| benchmark | measurement | {base} ratio | this tree ratio | change |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['benchmark']} | {row['name']} | {row['old']:.3f}x | {row['new']:.3f}x | "
            f"{row['change'] * 100:+.1f}% |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--only", nargs="*", help="only these benchmark modules")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side (median kept)")
    args = parser.parse_args(argv)
    base = subprocess.run(
        ["git", "rev-parse", "--short", args.base],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"vsp-{base}-") as tmp:
        print(f"exporting {base} and syncing its environment", flush=True)
        old_tree = export_tree(base, Path(tmp) / "old")
        sides = {"old": old_tree, "new": ROOT}
        for module, extra, what in BENCHMARKS:
            if args.only and module not in args.only:
                continue
            figures: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
            for round_ in range(args.rounds):
                order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
                for side in order:
                    print(f"\n=== {module} ({what}): {side}, round {round_ + 1}", flush=True)
                    out = Path(tmp) / f"results-{side}"
                    for name, c in run_benchmark(sides[side], module, extra, out).items():
                        figures[side].setdefault(name, []).append(float(c["ratio"]))
            for name in figures["new"]:
                if name not in figures["old"]:
                    continue
                old = statistics.median(figures["old"][name])
                new = statistics.median(figures["new"][name])
                change = new / old - 1 if old else 0.0
                rows.append(
                    {"benchmark": module, "name": name, "old": old, "new": new, "change": change}
                )
    lines = table(rows, base)
    print("\n" + "\n".join(lines))
    worse = [r for r in rows if r["change"] < -TOLERANCE]
    print(
        f"\n{len(rows)} comparisons in {(time.monotonic() - started) / 60:.1f} min; "
        f"{len(worse)} more than {TOLERANCE:.0%} below {base}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(
        json.dumps({"base": base, "rows": rows, "tolerance": TOLERANCE}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
