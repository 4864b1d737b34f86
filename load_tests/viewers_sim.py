"""Thousands of HLS viewers on playback clocks from one small asyncio process, and its own cost.

Each simulated viewer plays sessions back to back until the run ends: the master playlist, a rung
chosen by measured throughput, its variant playlist, the init segment, then segments one after
another in playback-clock time (``load_tests.playback``), never more than ``--max-buffer`` seconds
ahead. Viewers start spread evenly over ``--ramp`` seconds and all stop ``--duration`` seconds
after the ramp.

The stream API answer (``/api/stream/{id}?mode=token``) is fetched once per video and token
window and shared by every viewer, as a player page served from a cache would be: path tokens
are not tied to a viewer, so the origin sees one API call per video per window while playlists
and segments come from the edges. Playlists in token mode are served as stored, so each distinct
playlist text is parsed once.

The process measures its own CPU (getrusage), so a capacity run can say how much of the
machine the generator took from the suite it measures, and how late its event loop runs: every
time a viewer measures includes that lateness.

    .venv/bin/python -m load_tests.viewers_sim --target http://127.0.0.1:8081 \\
        --api http://127.0.0.1:8003 --viewers 2000 --ramp 30 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp

from load_tests.common import zipf_choice
from load_tests.playback import (
    PlaybackClock,
    Rung,
    parse_master,
    parse_media,
    percentile,
    summarize,
)
from shared.core import ports

RETRY_AFTER_ERROR_SECONDS = 1.0
LAG_PROBE_SECONDS = 0.1
GC_YOUNG_THRESHOLD = 100_000
# Time given to spawned generator processes to import and connect before viewers start.
CHILD_BOOT_SECONDS = 3.0
T = TypeVar("T")


@dataclass(frozen=True)
class SimConfig:
    """What to simulate: where viewers fetch from, which videos, how many and for how long."""

    target: str
    api: str
    videos: list[str]
    viewers: int
    ramp_seconds: float
    duration_seconds: float
    max_buffer_seconds: float = 12.0
    request_timeout_seconds: float = 10.0
    connections: int = 0  # 0: as many as viewers, one each at most, as real players have
    processes: int = 1  # generator processes the viewers are dealt to
    clock: Callable[[], PlaybackClock] = PlaybackClock  # each session's clock (its ABR settings)


@dataclass
class Traffic:
    """Requests the viewers sent and what came back."""

    requests: int = 0
    bytes: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def failed(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1


class RequestFailed(Exception):
    """A response other than 200, or no response in time."""


@lru_cache(maxsize=256)
def master_rungs(text: str) -> list[Rung]:
    """``parse_master`` once per distinct master playlist."""
    return parse_master(text)


@lru_cache(maxsize=1024)
def media_playlist(text: str) -> tuple[str | None, list[tuple[float, str]]]:
    """``parse_media`` once per distinct variant playlist."""
    return parse_media(text)


class StreamAnswers:
    """The master playlist path of each video, asked once per token window for all viewers."""

    def __init__(self, http: aiohttp.ClientSession, api: str) -> None:
        self.http = http
        self.api = api.rstrip("/")
        self.calls = 0
        self._answers: dict[str, tuple[str, float]] = {}  # video -> (master path, refresh at)
        self._pending: dict[str, asyncio.Task[str]] = {}

    async def master_path(self, video: str) -> str:
        """The cached answer while it has more than half its life left; else one shared fetch."""
        cached = self._answers.get(video)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        task = self._pending.get(video)
        if task is None:
            task = asyncio.ensure_future(self._fetch(video))
            self._pending[video] = task
            task.add_done_callback(lambda _: self._pending.pop(video, None))
        return await asyncio.shield(task)

    async def _fetch(self, video: str) -> str:
        self.calls += 1
        url = f"{self.api}/api/stream/{video}"
        async with self.http.get(url, params={"mode": "token"}) as response:
            if response.status != 200:
                raise RequestFailed(f"stream API: {response.status}")
            answer: dict[str, Any] = await response.json()
        parts = urlsplit(str(answer["master_url"]))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        refresh_at = time.monotonic() + float(answer.get("expires_in", 60)) / 2
        self._answers[video] = (path, refresh_at)
        return path


class Simulation:
    """Viewers sharing one connection pool, their sessions and the traffic they made."""

    def __init__(self, config: SimConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.http = http
        self.target = config.target.rstrip("/")
        self.answers = StreamAnswers(http, config.api)
        self.traffic = Traffic()
        self.sessions: list[dict[str, Any]] = []
        self.viewer_seconds = 0.0

    async def fetch(self, path: str, what: str) -> tuple[bytes, float]:
        """GET ``path`` from the target; the body and how long it took."""
        started = time.monotonic()
        self.traffic.requests += 1
        try:
            async with self.http.get(self.target + path) as response:
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.traffic.failed(f"{what}: {type(exc).__name__}")
            raise RequestFailed(what) from exc
        if status != 200:
            self.traffic.failed(f"{what}: {status}")
            raise RequestFailed(what)
        self.traffic.bytes += len(body)
        return body, time.monotonic() - started

    async def viewer(self, start_at: float, stop_at: float) -> None:
        """One viewer: sessions back to back from ``start_at`` until ``stop_at`` (monotonic)."""
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        began = time.monotonic()
        while time.monotonic() < stop_at:
            clock = self.config.clock()
            clock.start(time.monotonic())
            errors = 0
            try:
                await self.play(zipf_choice(self.config.videos), clock, stop_at)
            except RequestFailed:
                errors = 1
            self.sessions.append(clock.record(time.monotonic(), errors))
            if errors:
                await asyncio.sleep(min(RETRY_AFTER_ERROR_SECONDS, stop_at - time.monotonic()))
        self.viewer_seconds += time.monotonic() - began

    async def play(self, video: str, clock: PlaybackClock, stop_at: float) -> None:
        """Play ``video`` to its end (buffer included) or until ``stop_at``."""
        master_path = await self.answers.master_path(video)
        rungs = master_rungs((await self.fetch(master_path, "master"))[0].decode())
        media: dict[int, tuple[str, str | None, list[tuple[float, str]]]] = {}
        loaded_init: int | None = None
        index = 0
        while time.monotonic() < stop_at:
            choice = clock.choose(rungs)
            if choice not in media:
                url = urljoin(master_path, rungs[choice].uri)
                body, _ = await self.fetch(url, "variant")
                media[choice] = (url, *media_playlist(body.decode()))
            url, init, segments = media[choice]
            if index >= len(segments):
                break
            if init and loaded_init != choice:
                await self.fetch(urljoin(url, init), "init")
                loaded_init = choice
            duration, uri = segments[index]
            body, seconds = await self.fetch(urljoin(url, uri), "segment")
            clock.segment_downloaded(time.monotonic(), duration, len(body), seconds)
            index += 1
            await self._hold(clock, self.config.max_buffer_seconds, stop_at)
        await self._hold(clock, 0.0, stop_at)

    @staticmethod
    async def _hold(clock: PlaybackClock, ahead: float, stop_at: float) -> None:
        """Sleep while playing until at most ``ahead`` seconds stay buffered (or ``stop_at``)."""
        if clock.playing_since is None:
            return
        now = time.monotonic()
        wait = min(clock.buffered_ahead(now) - ahead, stop_at - now)
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class Share:
    """What one generator process's viewers did, and what running them cost it."""

    sessions: list[dict[str, Any]]
    traffic: Traffic
    stream_api_calls: int
    cpu_seconds: float
    viewer_seconds: float
    lags: list[float]


async def simulate(config: SimConfig) -> dict[str, Any]:
    """Run the viewers of ``config``; their experience, the traffic and the generator's cost.

    With ``config.processes`` above 1, the viewers are dealt round-robin to that many
    processes (this one and spawned children), all on one shared start time, so the ramp stays
    even; the results are merged and the generator's cost is the sum of its processes.
    """
    shares = max(1, config.processes)
    started = time.monotonic() + boot_seconds(config)
    children: list[asyncio.Future[Share]] = []
    pool = ProcessPoolExecutor(shares - 1, mp_context=get_context("spawn")) if shares > 1 else None
    try:
        loop = asyncio.get_running_loop()
        children = [
            loop.run_in_executor(pool, _share_in_child, config, k, shares, started)
            for k in range(1, shares)
        ]
        parts = [
            await _simulate_share(config, 0, shares, started),
            *await asyncio.gather(*children),
        ]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    wall = time.monotonic() - started
    sessions = [s for part in parts for s in part.sessions]
    requests = sum(part.traffic.requests for part in parts)
    failures: dict[str, int] = {}
    for part in parts:
        for what, count in part.traffic.failures.items():
            failures[what] = failures.get(what, 0) + count
    lags = [lag for part in parts for lag in part.lags]
    cpu = sum(part.cpu_seconds for part in parts)
    viewer_seconds = sum(part.viewer_seconds for part in parts)
    return {
        "viewers": config.viewers,
        "ramp_seconds": config.ramp_seconds,
        "duration_seconds": config.duration_seconds,
        **summarize(sessions),
        "requests": requests,
        "bytes": sum(part.traffic.bytes for part in parts),
        "http_failures": sum(failures.values()),
        "failures": failures,
        "stream_api_calls": sum(part.stream_api_calls for part in parts),
        "generator": {
            **_generator_cost(cpu, wall, viewer_seconds, requests),
            "processes": shares,
            "cpu_seconds_by_process": [part.cpu_seconds for part in parts],
            "loop_lag_p50_seconds": percentile(lags, 0.5),
            "loop_lag_p99_seconds": percentile(lags, 0.99),
        },
    }


def boot_seconds(config: SimConfig) -> float:
    """How long after ``simulate`` is called its viewers begin: spawned processes' start-up."""
    return CHILD_BOOT_SECONDS if config.processes > 1 else 0.0


def _share_in_child(config: SimConfig, share: int, shares: int, started: float) -> Share:
    """A spawned process's part of a run (CLOCK_MONOTONIC is the same in every process)."""
    return run(_simulate_share(config, share, shares, started))


async def _simulate_share(config: SimConfig, share: int, shares: int, started: float) -> Share:
    """Viewers ``share``, ``share + shares``, ... of the run starting at ``started``."""
    mine = range(share, config.viewers, shares)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_seconds)
    limit = -(-config.connections // shares) if config.connections else len(mine)
    connector = aiohttp.TCPConnector(limit=max(1, limit), limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        sim = Simulation(config, http)
        cpu_before = _own_cpu_seconds()
        stop_at = started + config.ramp_seconds + config.duration_seconds
        step = config.ramp_seconds / config.viewers if config.viewers else 0.0
        viewers = [sim.viewer(started + i * step, stop_at) for i in mine]
        lags = asyncio.ensure_future(_loop_lags(stop_at))
        await asyncio.gather(*viewers)
        cpu = _own_cpu_seconds() - cpu_before
        return Share(
            sim.sessions, sim.traffic, sim.answers.calls, cpu, sim.viewer_seconds, await lags
        )


async def _loop_lags(stop_at: float) -> list[float]:
    """How late the event loop wakes a sleeper, every LAG_PROBE_SECONDS until ``stop_at``.

    Every time viewers measure includes this lateness: when it grows the generator, not the
    suite, is what viewers are waiting for.
    """
    lags: list[float] = []
    while time.monotonic() < stop_at:
        asked = time.monotonic()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lags.append(time.monotonic() - asked - LAG_PROBE_SECONDS)
    return lags


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _generator_cost(
    cpu: float, wall: float, viewer_seconds: float, requests: int
) -> dict[str, Any]:
    """What simulating cost this process: per viewer-second, per request, share of the machine."""
    cores = os.cpu_count() or 1
    return {
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "viewer_seconds": viewer_seconds,
        "cpu_seconds_per_viewer_second": cpu / viewer_seconds if viewer_seconds else None,
        "cpu_ms_per_request": 1000 * cpu / requests if requests else None,
        "machine_cpu_share": cpu / (wall * cores) if wall else None,
        "cores": cores,
    }


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (its loop costs less per request), with the
    collector tuned for thousands of live viewers."""
    try:
        import uvloop
    except ImportError:
        loop_run: Callable[[Coroutine[Any, Any, T]], T] = asyncio.run
    else:
        loop_run = uvloop.run
    with few_collections():
        return loop_run(main)


@contextmanager
def few_collections() -> Iterator[None]:
    """Collect garbage rarely while viewers run.

    With the default thresholds, thousands of viewers' live requests make the collector scan
    them over and over: measured at 4,000 viewers, collections took 14 s of a 60 s run, full
    ones pausing the loop up to 0.7 s (a delay every viewer then counts as its own). Freezing
    what exists before the run and collecting young objects every 100,000 allocations instead
    of 700 cut that to under 1 s.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target",
        default=ports.local_url(ports.HAPROXY),
        help="base URL viewers fetch playlists and segments from: haproxy, an edge or the origin "
        "(default: the local haproxy in front of the edges)",
    )
    parser.add_argument(
        "--api",
        default=ports.local_url(ports.ORIGIN),
        help="base URL of the origin whose /api/stream/{id}?mode=token gives the master URL "
        "(only its path is used, fetched from --target)",
    )
    parser.add_argument(
        "--videos",
        nargs="+",
        required=True,
        help="ids of ready videos; each session picks one, popular ones (listed first) more often",
    )
    parser.add_argument("--viewers", type=int, default=100, help="simulated viewers")
    parser.add_argument(
        "--ramp", type=float, default=10, help="seconds over which viewers start, evenly spread"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=30,
        help="seconds every viewer keeps watching after the ramp",
    )
    parser.add_argument(
        "--max-buffer",
        type=float,
        default=12,
        help="seconds of media a player buffers ahead before it waits",
    )
    parser.add_argument(
        "--timeout", type=float, default=10, help="seconds a request may take before it fails"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=0,
        help="size of the shared connection pool (default: one per viewer, as real players)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="generator processes to deal the viewers to (one event loop each)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = SimConfig(
        target=args.target,
        api=args.api,
        videos=args.videos,
        viewers=args.viewers,
        ramp_seconds=args.ramp,
        duration_seconds=args.duration,
        max_buffer_seconds=args.max_buffer,
        request_timeout_seconds=args.timeout,
        connections=args.connections,
        processes=args.processes,
    )
    results = run(simulate(config))
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0 if not results["http_failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
