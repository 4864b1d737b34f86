"""The viewer simulator against a real origin and edge: what viewers experienced, what the origin
saw and what simulating cost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from load_tests.viewers_sim import SimConfig, simulate
from shared.runtime.resources import Resources
from tests.support.edge import origin_object_gets, start_edge
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.processes import Proc, Processes
from tests.support.signing import tokened

VIDEO_SECONDS = 8
VIEWERS = 20


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str], test_root: Path) -> Iterator[dict[str, Proc]]:
    """One origin and one edge in front of it."""
    procs = Processes(test_root / "logs" / "viewers-sim", test_env)
    try:
        origin = procs.service("origin")
        edge = start_edge(procs, origin.url, test_root / "viewers-sim-cache", name="edge-sim")
        yield {"origin": origin, "edge": edge}
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
async def video(res: Resources, media_dir: Path) -> AsyncIterator[SeededVideo]:
    ladder = make_ladder(media_dir, seconds=VIDEO_SECONDS)
    yield await seed_video(res, ladder, title="simulated viewers", seconds=VIDEO_SECONDS)


def test_token_playlists_are_cached_once_for_every_token(
    stack: dict[str, Proc], video: SeededVideo
) -> None:
    edge = stack["edge"].url
    prefix = f"{video.prefix}hls/"
    first = httpx.get(tokened(edge, video.master_key, prefix, ttl=300))
    second = httpx.get(tokened(edge, video.master_key, prefix, ttl=301))
    assert first.status_code == second.status_code == 200
    assert first.url.path != second.url.path  # two viewers' tokens, one cached copy
    assert "public" in first.headers["cache-control"]
    assert second.headers["x-cache"] == "HIT"
    assert second.text == first.text


async def test_twenty_viewers_play_with_measured_experience_and_cost(
    stack: dict[str, Proc], video: SeededVideo
) -> None:
    origin, edge = stack["origin"].url, stack["edge"].url
    config = SimConfig(
        target=edge,
        api=origin,
        videos=[str(video.id)],
        viewers=VIEWERS,
        ramp_seconds=5,
        duration_seconds=10,
    )
    results = await simulate(config)

    assert results["http_failures"] == 0, results["failures"]
    assert results["errors"] == 0
    assert results["sessions"] >= VIEWERS
    assert 0 < results["startup_p50_seconds"] <= results["startup_p95_seconds"] < 5
    assert results["stall_ratio"] < 0.05
    assert 0 < results["segment_time_ratio_mean"] < 1
    # Each viewer watched most of the run: at least the 10 s after the ramp, less one startup.
    assert results["watched_seconds"] > VIEWERS * 8
    # One stream API answer for every viewer of the video, and each object (playlists included)
    # fetched from the origin once, however many viewers asked the edge for it.
    assert results["stream_api_calls"] == 1
    assert results["requests"] > VIEWERS * VIDEO_SECONDS // 2
    assert origin_object_gets(origin, "200") <= len(video.files)
    cost = results["generator"]
    assert cost["cpu_seconds"] > 0
    assert cost["viewer_seconds"] >= VIEWERS * 10
    assert 0 < cost["cpu_seconds_per_viewer_second"] < 0.05
    assert 0 < cost["machine_cpu_share"] < 1
    assert 0 <= cost["loop_lag_p50_seconds"] <= cost["loop_lag_p99_seconds"]


async def test_viewers_dealt_to_two_generator_processes_are_merged(
    stack: dict[str, Proc], video: SeededVideo
) -> None:
    config = SimConfig(
        target=stack["edge"].url,
        api=stack["origin"].url,
        videos=[str(video.id)],
        viewers=VIEWERS,
        ramp_seconds=4,
        duration_seconds=6,
        processes=2,
    )
    results = await simulate(config)

    assert results["http_failures"] == 0, results["failures"]
    assert results["sessions"] >= VIEWERS
    assert results["watched_seconds"] > VIEWERS * 4
    # Each process asked for the stream answer once and played its half of the viewers.
    assert results["stream_api_calls"] == 2
    cost = results["generator"]
    assert cost["processes"] == 2
    assert len(cost["cpu_seconds_by_process"]) == 2
    assert all(seconds > 0 for seconds in cost["cpu_seconds_by_process"])
    assert cost["cpu_seconds"] == sum(cost["cpu_seconds_by_process"])
    assert cost["viewer_seconds"] >= VIEWERS * 6
