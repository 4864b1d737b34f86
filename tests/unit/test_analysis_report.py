"""The analysis report: an experiment's JSON round-trips, and docs/ANALYSIS.md shows every
claim beside its measured figure, each experiment's command, plot and table."""

from __future__ import annotations

import argparse
from pathlib import Path

from load_tests.analysis.report import Claim, Experiment, experiment_main, load, render, write


def sample(key: str = "uploads") -> Experiment:
    return Experiment(
        key=key,
        title="Upload reliability",
        method="Two protocols through the impairment proxy.",
        command="python -m load_tests.analysis.uploads --trials 3",
        columns=["protocol", "completed"],
        rows=[["tus", 1.0], ["h2", 0.5]],
        plot=f"{key}.png",
        claims=[Claim("chunked uploads are more reliable", "99.9% vs 92%", "100% vs 50%", "holds")],
        findings="tus resumes.",
        measured_at="2026-12-06 04:00 UTC",
        seconds=12.0,
    )


def test_an_experiment_round_trips_through_its_json(tmp_path: Path) -> None:
    experiment = sample()
    assert load(write(experiment, tmp_path)) == experiment


def test_the_report_shows_claims_commands_plots_and_tables() -> None:
    text = render([sample("uploads"), sample("workers")], plots="analysis")
    assert "| chunked uploads are more reliable | 99.9% vs 92% | 100% vs 50% | holds |" in text
    assert text.count("python -m load_tests.analysis.uploads --trials 3") == 2
    assert "![Upload reliability](analysis/workers.png)" in text
    assert "| tus | 1 |" in text and "| h2 | 0.5 |" in text
    assert '<a id="workers"></a>' in text


def test_experiment_main_stamps_the_run_and_writes_the_json(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    seen = []

    def run(args: argparse.Namespace) -> Experiment:
        seen.append((args.trials, args.quick))
        return sample()

    argv = ["--trials", "2", "--quick", "--out", str(tmp_path), "--plots", str(tmp_path)]
    experiment = experiment_main("load_tests.analysis.uploads", parser, run, argv)
    assert seen == [(2, True)]
    assert experiment.quick and experiment.command.startswith(
        "python -m load_tests.analysis.uploads --trials 2"
    )
    assert " UTC on " in experiment.measured_at and " cores, " in experiment.measured_at
    assert load(tmp_path / "uploads.json") == experiment
