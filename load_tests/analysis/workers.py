"""Worker patterns: push (basic_consume) vs pull (basic_get polling), job latency and idle CPU.

Three measurements, push and pull side by side at the same moment so that the machine's load
falls on both alike:

1. queue wait (publish to start) across arrival rates and worker counts, with the bench
   workers of ``load_tests.bench_queue`` (the transcoder's own loops, a short real encode as
   the job);
2. end to end on the real platform: a short clip streamed to the upload service, from the
   upload's 201 to the first playable segment (the transcoder's ``playable`` progress event:
   every rendition has a segment and the master playlist is live) and to the video ready;
3. the CPU the idle workers of (2) spend over a fixed window: what polling costs.

    python -m load_tests.analysis.workers --counts 1 2 --rates 0.5 2 8 --jobs 10 --rounds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import matplotlib
from redis.asyncio import Redis

from load_tests.analysis.report import Claim, Experiment, experiment_main
from load_tests.bench_origin import cpu_seconds
from load_tests.bench_queue import REDIS_URL, summary, worker_pools
from shared.videos.progress import channel
from tests.support.accounts import Account, create_account
from tests.support.infra import private_queues, scratch_database
from tests.support.media import make_clip
from tests.support.metrics import metric
from tests.support.processes import Proc, Processes

MODES = ("push", "pull")


def parser() -> argparse.ArgumentParser:
    """The experiment's parameters (full size by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.analysis.workers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[1, 2], help="workers per mode (queue wait)"
    )
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[0.5, 2.0, 8.0],
        help="mean jobs published per second (jittered), per mode (queue wait)",
    )
    parser.add_argument("--jobs", type=int, default=10, help="jobs per mode in each cell")
    parser.add_argument("--rounds", type=int, default=8, help="clips uploaded per mode, end to end")
    parser.add_argument(
        "--clip-seconds", type=float, default=12.0, help="length of the uploaded clip"
    )
    parser.add_argument(
        "--gap-seconds",
        type=float,
        nargs=2,
        default=[2.0, 6.0],
        metavar=("MIN", "MAX"),
        help="idle time between end-to-end rounds, drawn uniformly",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=30.0, help="window over which idle CPU is measured"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=5.0,
        help="wait after the last job before the idle window (the pull backoff reaches its 2 s "
        "ceiling within about 3 s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the idle gaps")
    return parser


def shrink(args: argparse.Namespace) -> None:
    """``--quick``: one small cell of each, in seconds."""
    args.counts, args.rates, args.jobs = [1], [4.0], 3
    args.rounds, args.clip_seconds, args.gap_seconds = 1, 2.0, [0.5, 0.5]
    args.idle_seconds, args.settle_seconds = 2.0, 0.5


# 1. Queue wait across arrival rates and worker counts.


@dataclass
class Cell:
    """The queue waits of one mode at one worker count and arrival rate."""

    mode: str
    workers: int
    rate: float
    waits: list[float]


async def queue_waits(args: argparse.Namespace, logs: Path) -> list[Cell]:
    """Every (worker count, rate) cell, both modes publishing at once."""
    cells = []
    for count in args.counts:
        async with worker_pools(count, logs / f"pools-{count}") as pools:
            for rate in args.rates:
                into: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in MODES}
                await asyncio.gather(
                    *(
                        pools.scenario(mode, into[mode], "measured", args.jobs, 1 / rate)
                        for mode in MODES
                    )
                )
                cells += [Cell(mode, count, rate, into[mode]["measured"]) for mode in MODES]
                print(f"queue wait: {count} workers, {rate:g}/s done", flush=True)
    return cells


# 2. End to end: upload accepted to first playable segment and to ready.


@dataclass
class Journey:
    """One clip from its upload's 201 to playable and ready (seconds since the 201)."""

    mode: str
    playable: float
    ready: float


@dataclass
class Events:
    """When each video's progress events arrived (wall clock), from the Redis channel."""

    playable: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)

    async def listen(self, redis: Redis) -> None:
        """Record every video's first ``playable`` and its ``ready`` event until cancelled."""
        pubsub = redis.pubsub()
        await pubsub.psubscribe(channel("*"))
        try:
            async for message in pubsub.listen():
                if message["type"] != "pmessage":
                    continue
                event = json.loads(message["data"])
                video = event["video_id"]
                if event.get("playable"):
                    self.playable.setdefault(video, time.time())
                if event.get("stage") == "ready":
                    self.ready.setdefault(video, time.time())
        finally:
            await pubsub.aclose()

    async def wait_ready(self, videos: Sequence[str], within: float) -> None:
        deadline = time.monotonic() + within
        while not all(v in self.ready for v in videos):
            if time.monotonic() > deadline:
                raise TimeoutError(f"videos {videos} not ready after {within} s")
            await asyncio.sleep(0.05)


def start_platform(procs: Processes, prefixes: dict[str, dict[str, str]]) -> dict[str, Proc]:
    """An upload service and a worker per mode on that mode's queues; by name ("upload-push",
    "worker-push", ...)."""
    started = {}
    for mode in MODES:
        started[f"upload-{mode}"] = procs.service("upload", env=prefixes[mode], wait=False)
        started[f"worker-{mode}"] = procs.worker(mode, env=prefixes[mode], wait=False)
    procs.wait_ready(started.values())
    return started


async def upload_clip(
    client: httpx.AsyncClient, url: str, clip: bytes, account: Account
) -> tuple[str, float]:
    """Stream ``clip`` to the upload service at ``url``; the new video's id, and when its 201
    arrived (wall clock, as the progress events are timed)."""
    response = await client.put(
        f"{url}/api/videos",
        content=clip,
        headers={**account.headers, "Content-Type": "application/octet-stream"},
    )
    response.raise_for_status()
    return str(response.json()["id"]), time.time()


async def journeys(
    args: argparse.Namespace, started: dict[str, Proc], clip: bytes, account: Account
) -> list[Journey]:
    """``args.rounds`` rounds: the clip uploaded to both modes at once, then an idle gap."""
    redis = Redis.from_url(REDIS_URL)
    events = Events()
    listener = asyncio.create_task(events.listen(redis))
    gaps = random.Random(args.seed)
    found = []
    try:
        await asyncio.sleep(0.5)  # the pattern subscription is in place before any upload
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(args.rounds):
                await asyncio.sleep(gaps.uniform(*args.gap_seconds))
                uploaded = await asyncio.gather(
                    *(
                        upload_clip(client, started[f"upload-{mode}"].url, clip, account)
                        for mode in MODES
                    )
                )
                await events.wait_ready([v for v, _ in uploaded], within=180)
                found += [
                    Journey(mode, events.playable[v] - accepted, events.ready[v] - accepted)
                    for mode, (v, accepted) in zip(MODES, uploaded, strict=True)
                ]
                print(f"end to end: {found[-2:]}", flush=True)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await redis.aclose()
    return found


# 3. What idle workers spend.


def idle_cpu(started: dict[str, Proc], seconds: float) -> dict[str, float]:
    """CPU seconds per minute each mode's worker spends over ``seconds`` with an empty queue."""
    before = {mode: cpu_seconds(started[f"worker-{mode}"].pid) for mode in MODES}
    time.sleep(seconds)
    return {
        mode: (cpu_seconds(started[f"worker-{mode}"].pid) - before[mode]) * 60 / seconds
        for mode in MODES
    }


@dataclass
class Measured:
    cells: list[Cell]
    journeys: list[Journey]
    queue_wait: dict[str, float]  # the real workers' mean queue wait, from their /metrics
    idle_cpu: dict[str, float]


def end_to_end(
    args: argparse.Namespace, root: Path
) -> tuple[list[Journey], dict[str, float], dict[str, float]]:
    """Measurements 2 and 3, on services of their own (database, queues, store)."""
    name = f"analysis_workers_{uuid.uuid4().hex[:8]}"
    with (
        scratch_database(name) as database,
        private_queues(f"{name}-push") as push,
        private_queues(f"{name}-pull") as pull,
    ):
        env = {
            **os.environ,
            "DATABASE_URL": database,
            "STORAGE_BACKEND": "fs",
            "STORAGE_ROOT": str(root / "objects"),
            "LOG_LEVEL": "WARNING",
        }
        procs = Processes(root / "logs", env)
        try:
            started = start_platform(procs, {"push": push, "pull": pull})
            account = create_account(env)
            clip = make_clip(root / "clip.mp4", seconds=args.clip_seconds, size="320x180")
            found = asyncio.run(journeys(args, started, clip.read_bytes(), account))
            waits = {
                mode: metric(started[f"worker-{mode}"].url, "transcode_queue_wait_seconds_sum")
                / max(
                    1.0, metric(started[f"worker-{mode}"].url, "transcode_queue_wait_seconds_count")
                )
                for mode in MODES
            }
            time.sleep(args.settle_seconds)
            return found, waits, idle_cpu(started, args.idle_seconds)
        finally:
            procs.stop_all()


def measure(args: argparse.Namespace) -> Measured:
    """The three measurements; their logs stay in a temporary folder when one fails."""
    root = Path(tempfile.mkdtemp(prefix="vsp-analysis-workers-"))
    try:
        found, waits, idle = end_to_end(args, root)
        cells = asyncio.run(queue_waits(args, root / "bench"))
    except BaseException:
        print(f"the logs: {root}", flush=True)
        raise
    shutil.rmtree(root, ignore_errors=True)
    return Measured(cells, found, waits, idle)


# The report.


def cut(push: float, pull: float) -> str:
    """How much lower push is than pull, in percent."""
    return f"{100 * (1 - push / pull):.0f}%" if pull > 0 else "-"


def rows(m: Measured) -> list[list[object]]:
    """One row per measure and condition: push, pull, and the cut."""
    table: list[list[object]] = []
    by = {(c.mode, c.workers, c.rate): summary(c.waits) for c in m.cells}
    for workers, rate in sorted({(c.workers, c.rate) for c in m.cells}):
        push, pull = by["push", workers, rate], by["pull", workers, rate]
        for stat in ("mean_s", "p95_s"):
            table.append(
                [
                    f"queue wait {stat[:-2]} (s)",
                    f"{workers} worker{'s' * (workers > 1)}, {rate:g} jobs/s",
                    round(push[stat], 3),
                    round(pull[stat], 3),
                    cut(push[stat], pull[stat]),
                ]
            )
    for what, attr in (("first playable", "playable"), ("ready", "ready")):
        push_s, pull_s = (
            statistics.fmean(getattr(j, attr) for j in m.journeys if j.mode == mode)
            for mode in MODES
        )
        table.append(
            [
                f"upload 201 to {what}, mean (s)",
                f"1 worker each, {len(m.journeys) // 2} clip(s) each",
                round(push_s, 2),
                round(pull_s, 2),
                cut(push_s, pull_s),
            ]
        )
    table.append(
        [
            "queue wait of those jobs, mean (s)",
            "the workers' own histogram",
            round(m.queue_wait["push"], 3),
            round(m.queue_wait["pull"], 3),
            cut(m.queue_wait["push"], m.queue_wait["pull"]),
        ]
    )
    table.append(
        [
            "idle worker CPU (s per minute)",
            "empty queue",
            round(m.idle_cpu["push"], 4),
            round(m.idle_cpu["pull"], 4),
            cut(m.idle_cpu["push"], m.idle_cpu["pull"]),
        ]
    )
    return table


def plot(m: Measured, folder: Path, name: str) -> str:
    """Queue wait against arrival rate, and time to first playable, push vs pull."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (waits, playable) = plt.subplots(1, 2, figsize=(10, 4.2))
    for mode in MODES:
        for workers in sorted({c.workers for c in m.cells}):
            cells = sorted(
                (c for c in m.cells if (c.mode, c.workers) == (mode, workers)), key=lambda c: c.rate
            )
            waits.plot(
                [c.rate for c in cells],
                [1000 * statistics.fmean(c.waits) for c in cells],
                "-o" if mode == "push" else "--s",
                label=f"{mode}, {workers} worker{'s' * (workers > 1)}",
            )
    waits.set_xscale("log")
    waits.set_yscale("log")
    rates = sorted({c.rate for c in m.cells})
    waits.set_xticks(rates, [f"{r:g}" for r in rates])
    waits.minorticks_off()
    waits.set_xlabel("arrival rate (jobs per second, log scale)")
    waits.set_ylabel("mean queue wait (ms, log scale)")
    waits.set_title("Queue wait, publish to start")
    waits.grid(alpha=0.3)
    waits.legend()
    playable.boxplot(
        [[j.playable for j in m.journeys if j.mode == mode] for mode in MODES],
        tick_labels=list(MODES),
    )
    playable.set_ylabel("upload 201 to first playable segment (s)")
    playable.set_title("End to end, short clips")
    playable.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=120)
    plt.close(fig)
    return name


@dataclass
class Cuts:
    """The figures the claim and the findings quote."""

    queue: dict[tuple[int, float], float]  # (workers, rate): how much lower push's mean wait is
    playable: dict[str, float]  # mode: mean seconds from the 201 to the first playable segment

    @property
    def end_to_end(self) -> float:
        return 1 - self.playable["push"] / self.playable["pull"]


def cuts(m: Measured) -> Cuts:
    mean = {(c.mode, c.workers, c.rate): statistics.fmean(c.waits) for c in m.cells}
    queue = {
        (w, r): 1 - mean["push", w, r] / mean["pull", w, r]
        for (mode, w, r) in mean
        if mode == "push" and mean["pull", w, r] > 0
    }
    playable = {
        mode: statistics.fmean(j.playable for j in m.journeys if j.mode == mode) for mode in MODES
    }
    return Cuts(queue, playable)


SEED_CUT = 0.65


def claim(m: Measured) -> Claim:
    """The seed's 65% against the queue-wait and end-to-end cuts measured here."""
    c = cuts(m)
    low, high = 100 * min(c.queue.values()), 100 * max(c.queue.values())
    end = 100 * c.end_to_end
    if min(c.queue.values()) > SEED_CUT:
        verdict = (
            f"holds, and more: push cuts the queue wait by {low:.0f}-{high:.0f}% in every cell"
        )
    elif max(c.queue.values()) < SEED_CUT:
        verdict = f"does not hold: push cuts the queue wait by {low:.0f}-{high:.0f}% only"
    else:
        verdict = (
            f"partly: 65% is one point of the {low:.0f}-{high:.0f}% range push cuts the queue "
            "wait by, which depends on the arrival rate and the workers"
        )
    return Claim(
        finding="push workers reduce job latency by 65%",
        seed="65%",
        measured=f"queue wait -{low:.0f}% to -{high:.0f}% across rates and worker counts; "
        f"upload to first playable -{end:.0f}% ({c.playable['push']:.2f} s vs "
        f"{c.playable['pull']:.2f} s)",
        verdict=f"{verdict}; end to end (upload to first playable) {end:.0f}%",
    )


def method(args: argparse.Namespace) -> str:
    """What was set up and measured, for the report."""
    return f"""
Push workers take jobs with `basic_consume` and prefetch 1; pull workers poll with `basic_get`,
backing off from 0.05 s to 2 s while the queue is empty. Both run the transcoder's own `Worker`
loops on real RabbitMQ; each mode has queues of its own and both are loaded at the same moment,
so the machine's load falls on both alike.

1. **Queue wait** (publish to start, the job's own timestamp against the worker's clock) with
   the bench workers of `load_tests/bench_queue.py` (the transcoder's loops with a 0.4 s real
   ffmpeg encode as the job): {", ".join(str(c) for c in args.counts)} workers per mode,
   {args.jobs} jobs per cell published at a mean of {", ".join(f"{r:g}" for r in args.rates)}
   jobs/s (each gap drawn uniformly from 0.5-1.5x the mean), after a warm-up.
2. **End to end** on the real platform: a {args.clip_seconds:g} s 320x180 clip streamed to the
   upload service (one per mode, each on its mode's queues, one `vsp worker` each), both modes at
   once, {args.rounds} rounds with {args.gap_seconds[0]:g}-{args.gap_seconds[1]:g} s idle between
   them. Measured from the upload's 201 to the transcoder's `playable` progress event (every
   rendition has a segment and the master playlist is live: a player can start) and to `ready`,
   as a subscriber to the Redis progress channel sees them. The outbox relay, the queue, the
   probe and the first segments' encode are all inside it.
3. **Idle CPU**: the user+system CPU of each of those workers (and any child) over
   {args.idle_seconds:g} s with an empty queue, {args.settle_seconds:g} s after their last job (the
   pull worker's backoff has reached its ceiling), per minute.

Limits: one machine, so the broker is on loopback (no network round trip in a poll); the broker's
own CPU for answering polls is not counted; small samples per cell (means and p95 of
{args.jobs} waits).
"""


def findings(m: Measured) -> str:
    """What the numbers say, each figure from this run."""
    c = cuts(m)
    least, most = min(c.queue, key=c.queue.__getitem__), max(c.queue, key=c.queue.__getitem__)
    polling = m.idle_cpu["pull"] / 60
    cost = "latency, not CPU" if polling < 0.01 else "latency and CPU both"
    share = m.queue_wait["pull"] / c.playable["pull"]
    return f"""
Push starts a job as soon as it is published; a pull worker that found the queue empty sleeps up
to 2 s (doubling from 0.05 s) before it looks again, so a job arriving at an idle pull worker
waits for the rest of its sleep, while a busy queue is polled again at once after each job. The
cut push makes is therefore not one figure: from {100 * c.queue[least]:.0f}% ({least[1]:g} jobs/s,
{least[0]} worker(s) per mode) to {100 * c.queue[most]:.0f}% ({most[1]:g} jobs/s, {most[0]}
worker(s) per mode). End to end on the real platform, from the upload's 201 to the first
playable segment, push took {c.playable["push"]:.2f} s and pull {c.playable["pull"]:.2f} s
({100 * c.end_to_end:.0f}% less); the pull worker's own queue wait ({m.queue_wait["pull"]:.2f} s
mean) is {100 * share:.0f}% of its path, the rest being the outbox relay, the probe and the first
segments' encode. Idle, the pull worker's polling costs {m.idle_cpu["pull"]:.3f} CPU s per minute
({100 * polling:.2f}% of a core) against {m.idle_cpu["push"]:.3f} for push: the price of polling
here is {cost}.
"""


def run(args: argparse.Namespace) -> Experiment:
    """Measure the three and report them."""
    if args.quick:
        shrink(args)
    measured = measure(args)
    return Experiment(
        key="workers",
        title="Worker patterns: push vs pull",
        method=method(args),
        command="",
        columns=["measure", "condition", "push", "pull", "push lower by"],
        rows=rows(measured),
        plot=plot(measured, args.plots, "workers.png"),
        claims=[claim(measured)],
        findings=findings(measured),
    )


def main(argv: Sequence[str] | None = None) -> None:
    experiment_main("load_tests.analysis.workers", parser(), run, argv)


if __name__ == "__main__":
    main()
