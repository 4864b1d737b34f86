"""How many simulated viewers this machine sustains before viewers notice, and what runs out first.

Raises the viewers of the asyncio simulator (``load_tests.viewers_sim``) step by step until a
step fails: stall ratio of 1% or more, startup p95 of 2 s or more, or any HTTP failure. The
answer is the largest step that passed. During each step's steady part (after its ramp) the CPU
of every process on the machine is measured; the busiest process of the suite or the generator
during the last passing step is the bottleneck. The generator shares the cores with the suite,
so its own CPU share is reported beside the answer. Results go to results/capacity.json.

Without --target it starts a suite of its own, so it runs anywhere the infrastructure does: a
scratch PostgreSQL database, the origin, two edges and haproxy on free ports, and --seed-videos
ready videos stored from a real ffmpeg HLS ladder. With --target it drives a running suite
(`make up`), watching --videos.

    .venv/bin/python -m load_tests.capacity --steps 200 500 1000 2000 3000 --ramp 15 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from load_tests.harness import RESULTS, Comparison, Report, command_line, machine
from load_tests.viewers_sim import SimConfig, boot_seconds, run, simulate
from shared.core import ports
from shared.core.settings import BaseServiceSettings
from shared.runtime.resources import close_resources, open_resources
from tests.support.edge import start_edge
from tests.support.infra import scratch_database
from tests.support.media import make_ladder
from tests.support.origin import seed_video
from tests.support.processes import Processes
from tests.support.proxies import start_haproxy

GENERATOR = "generator"
GOAL_VIEWERS = 2_000
STRETCH_VIEWERS = 5_000
VIDEO_SECONDS = 24
SEGMENT_SECONDS = 4


@dataclass
class Target:
    """Where viewers fetch from, what they watch, and the processes serving them by label."""

    delivery: str
    api: str
    videos: list[str]
    labels: dict[int, str] = field(default_factory=dict)


def sustained(s: dict[str, Any]) -> bool:
    """Viewers did not notice: stalls under 1%, startup p95 under 2 s, no failures."""
    return (
        s.get("sessions", 0) > 0
        and s.get("stall_ratio", 1) < 0.01
        and (s.get("startup_p95_seconds") or 99) < 2
        and not s.get("http_failures")
    )


@contextmanager
def own_suite(work: Path, videos: int, seconds: int = VIDEO_SECONDS) -> Iterator[Target]:
    """Origin, two edges and haproxy on a scratch database, with ``videos`` ready videos of
    ``seconds`` each."""
    with scratch_database(f"vsp_capacity_{os.getpid()}") as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "STORAGE_BACKEND": "fs",
            "STORAGE_ROOT": str(work / "objects"),
            "LOG_LEVEL": "WARNING",
        }
        procs = Processes(work / "logs", env)
        try:
            origin = procs.service("origin")
            edges = [
                start_edge(procs, origin.url, work / f"edge-cache-{n}", name=f"edge-{n}")
                for n in (1, 2)
            ]
            haproxy = start_haproxy(procs, work / "haproxy", [e.url for e in edges])
            settings = BaseServiceSettings(
                database_url=database_url, storage_backend="fs", storage_root=work / "objects"
            )
            ids = asyncio.run(_seed(settings, work, videos, seconds))
            labels = {origin.pid: "origin", haproxy.pid: "haproxy"}
            labels.update({edge.pid: f"edge-{n}" for n, edge in enumerate(edges, start=1)})
            yield Target(haproxy.url, origin.url, ids, labels)
        finally:
            procs.stop_all()


async def _seed(settings: BaseServiceSettings, work: Path, count: int, seconds: int) -> list[str]:
    """``count`` ready videos, each a copy of one real HLS ladder of ``seconds``."""
    ladder = make_ladder(work / "media", seconds=seconds, segment_seconds=SEGMENT_SECONDS)
    res = await open_resources(settings, {"db", "storage"})
    try:
        seeded = [
            await seed_video(res, ladder, title=f"capacity {n}", seconds=seconds)
            for n in range(count)
        ]
    finally:
        await close_resources(res)
    return [str(video.id) for video in seeded]


def cpu_snapshot(labels: dict[int, str]) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process on the machine, labelled by the suite process (or
    the generator) it belongs to, else by its command line."""
    known = {**labels, os.getpid(): GENERATOR}
    snapshot: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter():
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                snapshot[proc.pid] = (_label(proc, known), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return snapshot


def _label(proc: psutil.Process, known: dict[int, str]) -> str:
    for member in (proc, *proc.parents()):
        if member.pid in known:
            return known[member.pid]
    command = " ".join(proc.cmdline()[:5]) or proc.name()
    return f"other: {command[:90]}"


def cpu_by_label(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall: float
) -> dict[str, float]:
    """Cores each label used between two snapshots (1.0 is one core busy), busiest first."""
    used: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        start = before.get(pid, (label, 0.0))[1]
        used[label] = used.get(label, 0.0) + max(0.0, seconds - start) / wall
    return dict(sorted(used.items(), key=lambda item: -item[1]))


async def measured_step(config: SimConfig, labels: dict[int, str]) -> dict[str, Any]:
    """One simulator run, with the CPU of every process over its steady part (after the ramp)."""

    async def meter() -> tuple[dict[str, float], float]:
        await asyncio.sleep(boot_seconds(config) + config.ramp_seconds)
        before, busy, started = cpu_snapshot(labels), _busy_seconds(), time.monotonic()
        await asyncio.sleep(config.duration_seconds)
        wall = time.monotonic() - started
        return cpu_by_label(before, cpu_snapshot(labels), wall), (_busy_seconds() - busy) / wall

    results, (cores, busy) = await asyncio.gather(simulate(config), meter())
    return {
        **results,
        "cpu_cores_by_process": cores,
        "machine_busy_cores": busy,
        "load_average": os.getloadavg(),
    }


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent on anything but idling (interrupts included)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def bottleneck(cores: dict[str, float]) -> dict[str, Any] | None:
    """The busiest of the suite's processes and the generator."""
    ours = [(label, used) for label, used in cores.items() if not label.startswith("other: ")]
    if not ours:
        return None
    label, used = max(ours, key=lambda item: item[1])
    return {"process": label, "cpu_cores": used}


def ramp(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Run the steps until one fails; the steps, the answer and the bottleneck."""
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for viewers in args.steps:
        config = SimConfig(
            target=target.delivery,
            api=target.api,
            videos=target.videos,
            viewers=viewers,
            ramp_seconds=args.ramp,
            duration_seconds=args.duration,
            processes=args.processes,
        )
        step = run(measured_step(config, target.labels))
        step["sustained"] = sustained(step)
        rows.append(step)
        _print_step(step)
        if not step["sustained"]:
            break
        best = step
    last = best or (rows[0] if rows else None)
    return {
        "machine": machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sustained": best["viewers"] if best else 0,
        "bottleneck": bottleneck(last["cpu_cores_by_process"]) if last else None,
        "generator_at_sustained": best["generator"] if best else None,
        "steps": rows,
    }


def _print_step(s: dict[str, Any]) -> None:
    gen = s["generator"]
    top = ", ".join(
        f"{label} {used:.2f}" for label, used in list(s["cpu_cores_by_process"].items())[:6]
    )
    print(
        f"{s['viewers']:5d} viewers: stall ratio {s['stall_ratio']:.4f}, startup p95 "
        f"{s['startup_p95_seconds']}, failures {s['http_failures']}, segment time ratio mean "
        f"{s['segment_time_ratio_mean']}, generator {gen['machine_cpu_share']:.1%} of the machine "
        f"({gen['cpu_seconds_per_viewer_second']:.5f} CPU-s per viewer-s, loop lag p99 "
        f"{gen['loop_lag_p99_seconds']:.3f} s) -> "
        f"{'sustained' if s['sustained'] else 'viewers notice'}\n"
        f"    machine busy {s['machine_busy_cores']:.2f} cores: {top}",
        flush=True,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[200, 500, 1000, 2000, 3000, 5000],
        help="viewer counts to try, in order; the ramp stops at the first that fails",
    )  # fmt: skip
    parser.add_argument(
        "--ramp", type=float, default=15, help="seconds over which a step's viewers start"
    )
    parser.add_argument(
        "--duration", type=float, default=30,
        help="seconds each step runs after its ramp (CPU is measured over these)",
    )  # fmt: skip
    parser.add_argument(
        "--target",
        help="base URL of a running suite's delivery (e.g. haproxy of `make up`, "
        f"{ports.local_url(ports.HAPROXY)}); without it a suite of its own is started",
    )
    parser.add_argument(
        "--api",
        default=ports.local_url(ports.ORIGIN),
        help="the running suite's origin (with --target)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="generator processes the viewers are dealt to (default: one per core, so no "
        "single event loop's lateness becomes every viewer's startup time)",
    )
    parser.add_argument("--videos", nargs="+", default=[], help="ready video ids (with --target)")
    parser.add_argument(
        "--seed-videos", type=int, default=4, help="videos seeded into a suite of its own"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.target and not args.videos:
        sys.exit("--target needs --videos (ids of ready videos)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vsp-capacity-") as work:
        if args.target:
            report = ramp(Target(args.target, args.api, args.videos), args)
        else:
            with own_suite(Path(work), args.seed_videos) as target:
                report = ramp(target, args)
    Report("capacity", command_line(), comparisons(report), extra=report).write()
    print(f"most viewers sustained: {report['sustained']}; bottleneck: {report['bottleneck']}")
    return 0


def comparisons(report: dict[str, Any]) -> list[Comparison]:
    """The rows `make bench` shows: viewers sustained against the goals, and what the
    generator itself took of the machine at that step."""
    steps = report["steps"]
    best = next((s for s in steps if s["viewers"] == report["sustained"] and s["sustained"]), None)
    tried = ", ".join(str(s["viewers"]) for s in steps)
    notes = f"steps tried: {tried}; bottleneck: {report['bottleneck']}"
    rows = [
        Comparison(
            "simulated viewers sustained (stall ratio < 1 %, startup p95 < 2 s), generator on "
            "the same cores",
            "viewers",
            report["sustained"],
            GOAL_VIEWERS,
            f"the {GOAL_VIEWERS:,} viewer goal",
            goal_ratio=1.0,
            notes=notes,
        ),
        Comparison(
            "simulated viewers sustained vs the stretch goal",
            "viewers",
            report["sustained"],
            STRETCH_VIEWERS,
            f"the {STRETCH_VIEWERS:,} viewer goal",
            notes=notes,
        ),
    ]
    if best is not None:
        generator = best["cpu_cores_by_process"].get(GENERATOR, 0.0)
        cores = os.cpu_count() or 1
        rows.append(
            Comparison(
                f"generator's share of the busy CPU at {best['viewers']:,} viewers (the ratio)",
                "cores",
                generator,
                best["machine_busy_cores"],
                "every process on the machine",
                notes=f"the generator took {generator / cores:.0%} of the machine's {cores} cores",
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
