"""Run every experiment of the analysis and regenerate docs/ANALYSIS.md.

python -m load_tests.analysis            # full size: under 30 minutes on 2 cores
python -m load_tests.analysis --quick    # every experiment at a small size (a test runs it)
python -m load_tests.analysis --only uploads workers
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from load_tests.analysis.report import PLOTS, RESULTS, load, render
from tests.support.paths import ROOT

# In the report's order: upload protocols, worker patterns, edges for distant viewers, cache
# layouts, ABR under bandwidth changes.
EXPERIMENTS = ("uploads", "workers", "edges", "cache", "abr")
DOC = ROOT / "docs" / "ANALYSIS.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.analysis", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every experiment at a small size")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="these experiments only")
    parser.add_argument("--out", type=Path, default=ROOT / RESULTS, help="folder for the JSON")
    parser.add_argument("--plots", type=Path, default=ROOT / PLOTS, help="folder for the plots")
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help=f"the Markdown report to write (default {DOC.relative_to(ROOT)} for a full run, "
        "none for --quick)",
    )
    parser.add_argument(
        "--doc-only",
        action="store_true",
        help="run nothing: write the report from the JSON already in --out",
    )
    args = parser.parse_args(argv)
    doc = args.doc or (None if args.quick else DOC)
    failed = []
    for name in [] if args.doc_only else args.only or EXPERIMENTS:
        command = [sys.executable, "-m", f"load_tests.analysis.{name}"]
        command += ["--out", str(args.out), "--plots", str(args.plots)]
        if args.quick:
            command.append("--quick")
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
    if doc is not None:
        experiments = [
            load(args.out / f"{name}.json")
            for name in EXPERIMENTS
            if (args.out / f"{name}.json").exists()
        ]
        plots = os.path.relpath(args.plots.resolve(), doc.resolve().parent)
        doc.write_text(render(experiments, plots=plots))
        print(f"wrote {doc}", flush=True)
    if failed:
        print(f"failed: {' '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
