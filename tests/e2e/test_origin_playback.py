"""Playback outlives signature TTLs: a real-time paced viewer with a 2 s segment TTL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from shared.core.settings import BaseServiceSettings
from shared.media import hls
from shared.runtime.resources import Resources
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.processes import Processes
from tests.support.signing import signer_of

TTL_SECONDS = 2
VIDEO_SECONDS = 8


@pytest.fixture(scope="module")
def origin(test_env: dict[str, str], test_root: Path) -> Iterator[str]:
    manager = Processes(test_root / "logs" / "origin-playback", test_env)
    env = {
        "ORIGIN_SEGMENT_TTL_SECONDS": str(TTL_SECONDS),
        "ORIGIN_PLAYLIST_TTL_SECONDS": str(TTL_SECONDS),
    }
    try:
        yield manager.service("origin", env=env).url
    finally:
        manager.stop_all()


@pytest.fixture(scope="module")
async def video(res: Resources, media_dir: Path) -> AsyncIterator[SeededVideo]:
    ladder = make_ladder(media_dir, seconds=VIDEO_SECONDS)
    yield await seed_video(res, ladder, title="paced", seconds=VIDEO_SECONDS)


def test_a_video_longer_than_the_ttl_plays_to_its_end_in_real_time(
    origin: str, video: SeededVideo
) -> None:
    statuses: list[tuple[str, int, float]] = []
    with httpx.Client() as client:
        stream = client.get(f"{origin}/api/stream/{video.id}").json()
        master_url = stream["master_url"]
        master = client.get(master_url)
        statuses.append(("master", master.status_code, time.monotonic()))
        variant_url = urljoin(master_url, hls.referenced_uris(master.text)[-1])
        variant = client.get(variant_url)
        started = time.monotonic()
        statuses.append(("variant", variant.status_code, started))
        uris = hls.referenced_uris(variant.text)
        durations = hls.media_durations(variant.text)
        init, segments = uris[0], uris[1:]
        assert len(segments) == len(durations) == VIDEO_SECONDS // 2
        statuses.append(("init", client.get(urljoin(variant_url, init)).status_code, started))
        # A player keeps about one segment buffered: segment i is fetched as segment i-1 plays.
        position = 0.0
        for uri, duration in zip(segments, durations, strict=True):
            delay = started + max(0.0, position - duration) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            response = client.get(urljoin(variant_url, uri))
            statuses.append((uri.split("?", 1)[0], response.status_code, time.monotonic()))
            position += duration
        # The segment URIs were signed when the variant was fetched; the last ones were used
        # well after a plain segment TTL would have expired them.
        last_fetch = statuses[-1][2]
        assert last_fetch - started > TTL_SECONDS + 2
        assert [s for _, s, _ in statuses] == [200] * len(statuses), statuses
        # Signed the gateway's original way (exp = fetch time + TTL), the last segment is refused.
        naive = signer_of(BaseServiceSettings()).signed_url(
            f"{origin}/origin", video.key("180p/seg_00003.m4s"), TTL_SECONDS
        )
        time.sleep(TTL_SECONDS + 1.1)
        assert client.get(naive).status_code == 403


def test_ffmpeg_reads_the_whole_video_in_token_mode(origin: str, video: SeededVideo) -> None:
    def token_stream() -> dict[str, Any]:
        # Tokens last the 2 s TTL plus the video (11 s here): ask for one per client run, so a
        # slow start of ffprobe or ffmpeg on a busy machine does not outlast it.
        stream: dict[str, Any] = httpx.get(
            f"{origin}/api/stream/{video.id}", params={"mode": "token"}
        ).json()
        assert stream["expires_in"] == TTL_SECONDS + VIDEO_SECONDS + 1
        return stream

    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         token_stream()["variants"][0]["url"]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert abs(float(probe.stdout.strip()) - VIDEO_SECONDS) < 0.5
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", token_stream()["master_url"], "-map", "0:v:0", "-f",
         "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
