"""Playable while it transcodes: a viewer starts within 10 s of the upload completing.

Segments are stored as ffmpeg finishes them, behind EVENT playlists; the origin hands out a
stream as soon as the master playlist exists. ffmpeg plays the stream from its first segment
while the job still runs, follows the growing playlist, and stops at the ENDLIST the finished
job appends, having decoded the whole minute.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.support.accounts import Account
from tests.support.media import make_clip
from tests.support.polling import wait_for
from tests.support.processes import Processes

SECONDS = 60


def first_uri(playlist: str) -> str:
    return next(u for u in playlist.splitlines() if u and not u.startswith("#"))


def test_playback_starts_while_the_ladder_is_still_being_written(
    procs: Processes, media_dir: Path, account: Account
) -> None:
    upload = procs.service("upload").url
    origin = procs.service("origin").url
    worker = procs.worker("push")
    clip = make_clip(media_dir / "t360-60.mp4", seconds=SECONDS)

    response = httpx.put(
        f"{upload}/api/videos",
        params={"title": "live"},
        content=clip.read_bytes(),
        headers={**account.headers, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    uploaded_at = time.monotonic()
    video_id = response.json()["id"]

    def stream() -> dict | None:
        answer = httpx.get(f"{origin}/api/stream/{video_id}", timeout=5)
        return answer.json() if answer.status_code == 200 else None

    urls = wait_for(stream, timeout=10, interval=0.1, what="a playable stream")
    playable_after = time.monotonic() - uploaded_at
    assert playable_after <= 10

    details = httpx.get(f"{origin}/api/videos/{video_id}", timeout=5).json()
    assert details["state"] == "transcoding"
    master = httpx.get(urls["master_url"], timeout=5)
    assert master.status_code == 200 and "#EXT-X-STREAM-INF" in master.text
    variant_url = urljoin(urls["master_url"], first_uri(master.text))
    variant = httpx.get(variant_url, timeout=5).text
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in variant and "#EXT-X-ENDLIST" not in variant
    assert "#EXT-X-MAP" in variant and "#EXTINF" in variant

    # Start at the first segment (a player's default for EVENT is near the live edge).
    player = subprocess.Popen(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-nostats",
            "-progress",
            "pipe:1",
            "-live_start_index",
            "0",
            "-i",
            urls["master_url"],
            "-map",
            "0:v:0",
            "-f",
            "null",
            "-",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_frame = player.stdout.readline() if player.stdout else ""
    assert first_frame, "the player produced nothing"
    state_at_first_frame = httpx.get(f"{origin}/api/videos/{video_id}", timeout=5).json()["state"]
    assert state_at_first_frame == "transcoding"

    out, err = player.communicate(timeout=240)
    assert player.returncode == 0, err
    decoded = max(int(x.split("=")[1]) for x in out.split() if x.startswith("out_time_us="))
    assert decoded / 1e6 == pytest.approx(SECONDS, abs=1)

    # The finished job stores the final playlists (with ENDLIST) just before it marks the
    # video ready, so the player can be done a moment before the row says so.
    def settled() -> str | None:
        state = httpx.get(f"{origin}/api/videos/{video_id}", timeout=5).json()["state"]
        return None if state == "transcoding" else str(state)

    assert wait_for(settled, timeout=30, what="the video to leave transcoding") == "ready"
    final_master = httpx.get(f"{origin}/api/stream/{video_id}").json()["master_url"]
    final_variant = first_uri(httpx.get(final_master, timeout=5).text)
    vod = httpx.get(urljoin(final_master, final_variant), timeout=5).text
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod.rstrip().endswith("#EXT-X-ENDLIST")
    # The worker logs the job done just after it marks the video ready.
    wait_for(
        lambda: " done (succeeded)" in worker.log(),
        timeout=15,
        what="the worker to log the job done",
    )
