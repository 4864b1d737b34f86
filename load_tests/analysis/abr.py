"""ABR under bandwidth changes: stall ratio and mean rung for the viewer simulator over a
bandwidth trace.

The suite of ``load_tests.capacity`` (scratch database, origin, two edges behind haproxy, a ready
video stored from a real ffmpeg HLS ladder) serves viewers of ``load_tests.viewers_sim`` through
the impairment proxy (``load_tests/impair.py``). The proxy limits each connection's download
rate and follows a trace of phases (e.g. 4 -> 1.2 -> 0.4 -> 2 Mbit/s), changing the rate of
open connections as a phase begins. Each viewer has a connection of its own, so the rate is
the bandwidth one viewer sees. Groups of viewers with different ABR ``safety`` factors (the share
of the measured throughput a rung may use, ``load_tests.playback``) watch at the same time,
and each session's playback clock is sampled to split stalls, rung choices and switches by phase.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from load_tests.analysis.report import Experiment, experiment_main
from load_tests.capacity import SEGMENT_SECONDS, Target, own_suite
from load_tests.impair import Impairment, Proxy
from load_tests.playback import PlaybackClock, Rung
from load_tests.viewers_sim import SimConfig, simulate
from load_tests.viewers_sim import run as run_loop

# How often every playback clock is sampled (stalls and play time are split by phase on ticks).
TICK_SECONDS = 0.25
# Viewers start over this many seconds, so their segment requests do not all line up.
RAMP_SECONDS = 2.0
# A slow segment is waited for, as a player would, rather than failed (0.4 Mbit/s takes ~10 s
# for a top-rung segment).
REQUEST_TIMEOUT_SECONDS = 60.0
MBIT = 1_000_000


@dataclass(frozen=True)
class Phase:
    mbit_per_second: float
    seconds: float


def parse_phase(text: str) -> Phase:
    """``"1.2:20"`` -> 1.2 Mbit/s for 20 s."""
    try:
        rate, seconds = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not MBIT:SECONDS: {text!r}") from None
    if rate <= 0 or seconds <= 0:
        raise argparse.ArgumentTypeError(f"rate and seconds must be positive: {text!r}")
    return Phase(rate, seconds)


@dataclass
class Trace:
    """The phases, played from ``started_at`` (monotonic); the last one lasts until the end."""

    phases: list[Phase]
    started_at: float = 0.0

    @property
    def seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)

    def phase_at(self, now: float) -> int:
        elapsed = now - self.started_at
        for index, phase in enumerate(self.phases):
            elapsed -= phase.seconds
            if elapsed < 0:
                return index
        return len(self.phases) - 1

    async def play(self, proxy: Proxy) -> None:
        """Set the proxy's download rate to each phase's in turn, on time."""
        end = self.started_at
        for phase in self.phases:
            proxy.set_rate("down", phase.mbit_per_second * MBIT / 8)
            end += phase.seconds
            await asyncio.sleep(max(0.0, end - time.monotonic()))


@dataclass
class Tally:
    """What the viewers of one ABR setting did during one phase."""

    segments: int = 0
    rung_bits: float = 0.0  # summed BANDWIDTH of the rungs chosen for those segments
    top: int = 0  # segments of the top rung
    switches: int = 0
    stalls: int = 0
    stalled: float = 0.0
    watched: float = 0.0

    @property
    def mean_rung(self) -> float | None:
        """Mean BANDWIDTH of the rungs chosen, in Mbit/s (None: no segment was requested)."""
        return self.rung_bits / self.segments / MBIT if self.segments else None

    @property
    def stall_ratio(self) -> float:
        total = self.stalled + self.watched
        return self.stalled / total if total else 0.0


@dataclass
class Group:
    """Viewers sharing one ABR setting: their clocks, tallies by phase, and a time series."""

    safety: float
    trace: Trace
    clocks: list[TracedClock] = field(default_factory=list)
    tallies: list[Tally] = field(default_factory=list)
    series: list[tuple[float, float, float]] = field(default_factory=list)  # t, Mbit/s, buffer

    def __post_init__(self) -> None:
        self.tallies = [Tally() for _ in self.trace.phases]

    def new_clock(self) -> TracedClock:
        """A session's clock at this setting, tallied here."""
        clock = TracedClock(safety=self.safety, group=self)
        self.clocks.append(clock)
        return clock

    def tally(self, now: float) -> Tally:
        return self.tallies[self.trace.phase_at(now)]

    def sample(self, now: float) -> None:
        """Tally every live clock's play and stall time since its last sample; note the mean
        rung being fetched and the mean buffer of those playing."""
        live = [clock for clock in self.clocks if not clock.ended]
        for clock in live:
            clock.sample(now)
        rungs = [clock.rung_bits for clock in live if clock.rung_bits]
        buffers = [clock.buffered_ahead(now) for clock in live if clock.started_playing]
        if rungs:
            mean_buffer = statistics.fmean(buffers) if buffers else 0.0
            self.series.append(
                (now - self.trace.started_at, statistics.fmean(rungs) / MBIT, mean_buffer)
            )


@dataclass
class TracedClock(PlaybackClock):
    """A playback clock that tallies its rung choices, stalls and play time by trace phase."""

    group: Group | None = None
    ended: bool = False
    rung_bits: float = 0.0
    _seen: tuple[float, float, int] = (0.0, 0.0, 0)  # stalled, watched, stall count

    @property
    def started_playing(self) -> bool:
        return self.playing_since is not None or self.stall_count > 0

    def choose(self, rungs: list[Rung]) -> int:
        before = self.current
        choice = super().choose(rungs)
        self.rung_bits = rungs[choice].bandwidth
        if self.group is not None:
            tally = self.group.tally(time.monotonic())
            tally.segments += 1
            tally.rung_bits += self.rung_bits
            tally.top += choice == len(rungs) - 1
            tally.switches += before is not None and choice != before
        return choice

    def sample(self, now: float) -> None:
        """Add the play and stall time since the last sample to the phase of ``now``."""
        stalled, watched = self.stalled_seconds(now), self.watched_seconds(now)
        last_stalled, last_watched, last_stalls = self._seen
        if self.group is not None:
            tally = self.group.tally(now)
            tally.stalled += stalled - last_stalled
            tally.watched += watched - last_watched
            tally.stalls += self.stall_count - last_stalls
        self._seen = (stalled, watched, self.stall_count)

    def record(self, now: float, errors: int) -> dict[str, Any]:
        self.sample(now)
        self.ended = True
        return super().record(now, errors)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m load_tests.analysis.abr", description=__doc__)
    parser.add_argument(
        "--trace",
        type=parse_phase,
        nargs="+",
        default=[Phase(4, 20), Phase(1.2, 20), Phase(0.4, 20), Phase(2, 20)],
        metavar="MBIT:SECONDS",
        help="the bandwidth trace: each viewer's download rate (Mbit/s) and how long it lasts",
    )
    parser.add_argument(
        "--safety",
        type=float,
        nargs="+",
        default=[0.6, 0.8, 1.0, 1.3],
        help="ABR settings compared: the share of measured throughput a rung may use "
        "(0.8 is the playback clock's default)",
    )
    parser.add_argument(
        "--viewers", type=int, default=3, help="viewers per ABR setting, all watching at once"
    )
    parser.add_argument(
        "--max-buffer", type=float, default=12, help="seconds a player buffers ahead at most"
    )
    return parser


async def watch(
    target: Target, groups: list[Group], trace: Trace, args: argparse.Namespace
) -> None:
    """Every group's viewers through one proxy while it plays the trace."""
    delivery = urlsplit(target.delivery)
    assert delivery.hostname is not None and delivery.port is not None
    async with Impairment().serve((delivery.hostname, delivery.port)) as proxy:
        trace.started_at = time.monotonic()
        proxy.set_rate("down", trace.phases[0].mbit_per_second * MBIT / 8)
        configs = [
            SimConfig(
                target=f"http://{proxy.address}",
                api=target.api,
                videos=target.videos,
                viewers=args.viewers,
                ramp_seconds=RAMP_SECONDS,
                duration_seconds=trace.seconds - RAMP_SECONDS,
                max_buffer_seconds=args.max_buffer,
                request_timeout_seconds=REQUEST_TIMEOUT_SECONDS,
                clock=group.new_clock,
            )
            for group in groups
        ]
        results = await asyncio.gather(
            trace.play(proxy), sample(groups, trace), *(simulate(c) for c in configs)
        )
    failures = [r["failures"] for r in results[2:] if r["http_failures"]]
    if failures:
        raise RuntimeError(f"viewers saw HTTP failures: {failures}")


async def sample(groups: list[Group], trace: Trace) -> None:
    """Sample every group on each tick until the trace ends."""
    end = trace.started_at + trace.seconds
    while (now := time.monotonic()) < end:
        for group in groups:
            group.sample(now)
        await asyncio.sleep(TICK_SECONDS)


def measure(args: argparse.Namespace) -> list[Group]:
    """Run the trace against a suite of its own; the groups with their tallies."""
    trace = Trace(args.trace)
    groups = [Group(safety, trace) for safety in args.safety]
    # Long enough that each viewer plays one session through the whole trace.
    seconds = int(trace.seconds + args.max_buffer + 2 * SEGMENT_SECONDS)
    seconds += -seconds % SEGMENT_SECONDS
    work = Path(tempfile.mkdtemp(prefix="vsp-analysis-abr-"))
    try:
        with own_suite(work, 1, seconds) as target:
            run_loop(watch(target, groups, trace, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return groups


def row(label: str, link: str, tally: Tally, viewers: int) -> list[object]:
    # A phase shorter than the buffer may request no segment.
    mean = tally.mean_rung
    return [
        label,
        link,
        "none requested" if mean is None else round(mean, 3),
        "-" if mean is None else f"{tally.top / tally.segments:.0%}",
        f"{tally.stall_ratio:.2%}",
        tally.stalls,
        round(tally.stalled, 1),
        round(tally.switches / viewers, 2),
    ]


def total(tallies: list[Tally]) -> Tally:
    """The tallies of every phase added up."""
    return Tally(*(sum(getattr(t, f.name) for t in tallies) for f in fields(Tally)))


def table(groups: list[Group], viewers: int) -> list[list[object]]:
    rows = []
    for group in groups:
        for phase, tally in zip(group.trace.phases, group.tallies, strict=True):
            link = f"{phase.mbit_per_second:g} ({phase.seconds:g} s)"
            rows.append(row(f"{group.safety:g}", link, tally, viewers))
        rows.append(row(f"{group.safety:g}", "whole trace", total(group.tallies), viewers))
    return rows


def plot(groups: list[Group], trace: Trace, folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "abr.png"
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[3, 2])
    edges, rates = [0.0], []
    for phase in trace.phases:
        edges.append(edges[-1] + phase.seconds)
        rates.append(phase.mbit_per_second)
    top.stairs(rates, edges, color="black", linewidth=2, label="link (per viewer)")
    for group in groups:
        times = [t for t, _, _ in group.series]
        top.plot(times, [m for _, m, _ in group.series], label=f"safety {group.safety:g}")
        bottom.plot(times, [b for _, _, b in group.series], label=f"safety {group.safety:g}")
    top.set_ylabel("Mbit/s")
    top.set_ylim(bottom=0)
    top.set_title("Link bandwidth and the mean rung bitrate being fetched (BANDWIDTH)")
    top.legend(fontsize=8)
    bottom.set_ylabel("buffer ahead, mean (s)")
    bottom.set_xlabel("time since the trace started (s)")
    bottom.axhline(0, color="grey", linewidth=0.5)
    for edge in edges[1:-1]:
        top.axvline(edge, color="grey", linewidth=0.5, linestyle=":")
        bottom.axvline(edge, color="grey", linewidth=0.5, linestyle=":")
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def findings(groups: list[Group], trace: Trace) -> str:
    """What the tallies say: each setting over the whole trace, then the trade-off between the
    most cautious and the boldest setting, and the phase where their rung choices differ most."""
    lines = []
    for group in groups:
        whole = total(group.tallies)
        worst = max(range(len(trace.phases)), key=lambda i: group.tallies[i].stall_ratio)
        where = (
            f"most of them at {trace.phases[worst].mbit_per_second:g} Mbit/s "
            f"({group.tallies[worst].stall_ratio:.2%} there)"
            if whole.stalled
            else "no stall"
        )
        lines.append(
            f"- safety {group.safety:g}: mean rung {whole.mean_rung or 0:.2f} Mbit/s, stall "
            f"ratio {whole.stall_ratio:.2%} ({whole.stalls} stalls, {whole.stalled:.1f} s over "
            f"its viewers; {where}), {whole.switches} rung switches."
        )
    cautious, bold = min(groups, key=lambda g: g.safety), max(groups, key=lambda g: g.safety)
    if cautious is not bold:
        a, b = total(cautious.tallies), total(bold.tallies)
        gaps = [
            abs((y.mean_rung or 0) - (x.mean_rung or 0))
            for x, y in zip(cautious.tallies, bold.tallies, strict=True)
        ]
        widest = max(range(len(gaps)), key=gaps.__getitem__)
        lines.append(
            f"- From safety {cautious.safety:g} to {bold.safety:g} the mean rung goes from "
            f"{a.mean_rung or 0:.2f} to {b.mean_rung or 0:.2f} Mbit/s and the stall ratio from "
            f"{a.stall_ratio:.2%} to {b.stall_ratio:.2%}. Their choices differ most at "
            f"{trace.phases[widest].mbit_per_second:g} Mbit/s "
            f"({cautious.tallies[widest].mean_rung or 0:.2f} vs "
            f"{bold.tallies[widest].mean_rung or 0:.2f} Mbit/s)."
        )
    weight = PlaybackClock().ewma_weight
    lag = math.ceil(math.log(0.2) / math.log(1 - weight))
    lines.append(
        f"- Why the choices lag the trace: the estimate is an EWMA (weight {weight:g}) of "
        f"per-segment download rates, and a player with a full buffer fetches one "
        f"{SEGMENT_SECONDS} s segment per {SEGMENT_SECONDS} s, so after a step it takes "
        f"{lag} segments (about {lag * SEGMENT_SECONDS} s) to close 80% of the gap. A cautious "
        "setting pays for it after a rise (it stays low while the link has recovered), a bold "
        "one after a fall (it keeps fetching a rung the link can no longer carry until the "
        "buffer runs dry). The first segment of a session is always the lowest rung."
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Experiment:
    if args.quick:
        args.trace = [Phase(4, 3), Phase(0.4, 3), Phase(2, 3)]
        args.safety, args.viewers = [0.8, 1.3], 1
    groups = measure(args)
    trace = groups[0].trace
    phases = " -> ".join(f"{p.mbit_per_second:g} Mbit/s for {p.seconds:g} s" for p in trace.phases)
    return Experiment(
        key="abr",
        title="ABR under bandwidth changes: stall ratio and mean rung",
        method=f"""\
The suite of `load_tests.capacity` (a scratch database, `vsp serve origin`, two edges behind
haproxy) serves one ready video stored from a real ffmpeg HLS ladder: a test pattern in
{SEGMENT_SECONDS} s fMP4 segments, two rungs (640x360 at BANDWIDTH about 1.06 Mbit/s and 320x180
at about 0.35 Mbit/s, video and AAC audio), long enough that each viewer plays one session
through the whole trace. Viewers are those of `load_tests.viewers_sim` (asyncio, one
connection each, the playback clock of `load_tests.playback`: start after one segment, buffer at
most {args.max_buffer:g} s ahead, choose the highest rung whose BANDWIDTH fits within `safety` of
an EWMA (weight 0.3) of segment download rates; the first segment is always the lowest rung).

They fetch through the impairment proxy, which limits each connection's download rate to the
trace: {phases}. The rate of open connections changes as a phase begins. {args.viewers}
viewer(s) per ABR setting, all settings watching at once through the same proxy (the rate is per
connection, so the groups do not share bandwidth; they share the machine's CPU).

Each session's clock is sampled every {TICK_SECONDS:g} s: the play and stall time since the last
sample go to the phase the sample falls in. Per phase: the link rate, the mean BANDWIDTH of the
rungs chosen for the segments requested in that phase (a choice is made when a segment is
requested, up to {args.max_buffer:g} s before it plays), the share of top-rung segments, the stall
ratio (stall time over stall plus play time), stalls begun, stall seconds summed over viewers,
and rung switches per viewer. The startup wait (before the first frame) counts as neither.

Limits: two rungs only, so "mean rung" moves between 0.35 and 1.06 Mbit/s; the link is a token
bucket with no delay or loss, so a download's measured rate is the link rate and the estimate
only lags; a few viewers per setting, so single stalls move the ratios.""",
        command="",
        columns=[
            "safety",
            "link Mbit/s (phase)",
            "mean rung Mbit/s",
            "top-rung segments",
            "stall ratio",
            "stalls",
            "stall s (all viewers)",
            "switches per viewer",
        ],
        rows=table(groups, args.viewers),
        plot=plot(groups, trace, args.plots),
        findings=findings(groups, trace),
    )


def main(argv: Sequence[str] | None = None) -> None:
    experiment_main("load_tests.analysis.abr", parser(), run, argv)


if __name__ == "__main__":
    main()
