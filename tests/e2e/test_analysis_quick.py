"""The whole analysis at its quick size: every experiment starts its processes, measures, writes
its JSON and plot, and the report renders from them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from load_tests.analysis.__main__ import EXPERIMENTS
from tests.support.paths import ROOT

# Every experiment's quick size takes seconds; the whole run must stay short enough for make test.
TIMEOUT_SECONDS = 240


@pytest.mark.slow
def test_every_experiment_runs_at_its_quick_size(tmp_path: Path) -> None:
    doc = tmp_path / "ANALYSIS.md"
    started = time.monotonic()
    command = [sys.executable, "-m", "load_tests.analysis", "--quick", "--doc", str(doc)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path), "--plots", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"after {elapsed:.0f} s:\n{done.stdout}\n{done.stderr[-4000:]}"
    for key in EXPERIMENTS:
        result = json.loads((tmp_path / f"{key}.json").read_text())
        assert result["key"] == key and result["quick"] is True
        assert result["rows"] and all(len(row) == len(result["columns"]) for row in result["rows"])
        assert result["plot"] == f"{key}.png"
        assert (tmp_path / result["plot"]).stat().st_size > 0
    report = doc.read_text()
    assert "## Claim vs measured" in report
    assert "| finding (seed) | seed's figure | measured here | verdict | experiment |" in report
    table = report.split("## Claim vs measured", 1)[1].split('<a id="', 1)[0]
    claims = [line for line in table.splitlines() if line.startswith("| ")][2:]
    assert claims, "the claims table has no claim"
    assert all("](#" in line for line in claims), claims
    for key in EXPERIMENTS:
        assert f'<a id="{key}"></a>' in report and f"{key}.png)" in report
