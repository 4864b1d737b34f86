"""One real transcode with everything a player may ask of it: the ABR ladder, I-frame playlists
for trick play, the thumbnails track and French subtitles, all through one origin, checked by
the strict validator together, and the I-frame playlist decoded whole by ffmpeg from its signed
URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from services.transcoder import service
from services.transcoder.settings import Settings
from shared.media.samples import synthetic_clip as make_clip
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.hls import (
    check_bandwidth,
    check_iframe_playlists,
    check_subtitles,
    check_tags,
    decode_frames,
    download_ladder,
    keyframe_times,
    parse_ladder,
)
from tests.support.processes import Proc, Processes
from tests.support.transcode import queued_video, video_row

SECONDS = 8
FR_SRT = (
    "1\n00:00:01,000 --> 00:00:03,000\nBonjour\n\n2\n00:00:05,000 --> 00:00:07,000\nAu revoir\n"
)


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> Proc:
    return module_procs.service("origin")


@pytest.fixture
async def transcoded(res: Resources, media_dir: Path, tmp_path: Path) -> tuple[str, Path]:
    """A video the real transcoder made ready; its id and a local copy of its stored run."""
    clip = make_clip(media_dir / "complete-640.mp4", seconds=SECONDS, size="640x360", rate=25)
    job = await queued_video(res, clip)
    await service.transcode(res, Settings(), job)
    video = await video_row(res, job.video_id)
    assert video.state == "ready", video.error
    assert video.master_key is not None
    root = await download_ladder(
        res.need_store(), video.master_key.rsplit("/", 1)[0] + "/", tmp_path / "run"
    )
    return str(job.video_id), root


def test_ladder_iframes_previews_and_subtitles_pass_the_strict_checks_together(
    origin: Proc, admin_account: Account, transcoded: tuple[str, Path]
) -> None:
    video_id, root = transcoded
    added = httpx.put(
        f"{origin.url}/api/videos/{video_id}/captions/fr",
        params={"label": "Français"},
        content=FR_SRT.encode(),
        headers={**admin_account.headers, "Content-Type": "application/x-subrip"},
        timeout=30,
    )
    assert added.status_code == 200, added.text

    # Token mode serves the playlists as stored (relative URIs) plus the subtitle lines, so the
    # served master can stand in for the stored one in a local copy of the ladder.
    answer = httpx.get(f"{origin.url}/api/stream/{video_id}", params={"mode": "token"})
    assert answer.status_code == 200, answer.text
    master_url = answer.json()["master_url"]
    assert answer.json()["thumbnails_url"]
    with httpx.Client(timeout=30) as client:
        served = client.get(master_url)
        assert served.status_code == 200, served.text

        def fetch(url: str) -> str:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response.text

        tracks = check_subtitles(master_url, served.text, fetch, media_seconds=SECONDS)
        thumbnails = fetch(urljoin(master_url, "thumbnails.vtt"))
    assert [t.attrs["LANGUAGE"] for t in tracks] == ["fr"]
    assert any("Bonjour" in segment for segment in tracks[0].segments)
    assert thumbnails.startswith("WEBVTT") and "#xywh=" in thumbnails
    assert "#EXT-X-I-FRAME-STREAM-INF:" in served.text

    (root / "master.m3u8").write_text(served.text)
    ladder = parse_ladder(root)
    check_tags(ladder, video=True)
    check_bandwidth(ladder)
    assert check_iframe_playlists(ladder) > 0

    # ffmpeg plays the trick-play rendition from its signed URL: one frame per keyframe.
    top = ladder.variants[0]
    iframes = urljoin(master_url, f"{top.folder}/iframes.m3u8")
    assert decode_frames(iframes) == len(keyframe_times(ladder, top))
