"""Scrubbing previews and I-frame playlists of a real transcode, checked from the stored objects,
and the progress the one ffmpeg pass reports with its preview branch on."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from pathlib import Path

import pytest

from services.transcoder import ffmpeg, previews, service
from services.transcoder.ladder import plan_ladder
from services.transcoder.settings import Settings
from shared.media.ffprobe import probe
from shared.media.samples import synthetic_clip as make_clip
from shared.runtime.resources import Resources
from tests.support.hls import (
    check_iframe_playlists,
    check_tags,
    download_ladder,
    keyframe_times,
    parse_ladder,
)
from tests.support.transcode import queued_video, video_row

CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


@pytest.fixture(scope="module")
def worker_settings(test_env: dict[str, str]) -> Settings:
    return Settings()


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def image_size(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=width,height", "-of", "json", path],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    stream = json.loads(out.stdout)["streams"][0]
    return stream["width"], stream["height"]


def cues(vtt: str) -> list[tuple[float, float, str]]:
    """(start, end, payload) of every cue, read without the code that wrote them."""
    lines = vtt.splitlines()
    assert lines[0] == "WEBVTT"
    found = []
    for i, line in enumerate(lines):
        if match := CUE.match(line):
            g = match.groups()
            found.append((seconds(*g[:4]), seconds(*g[4:]), lines[i + 1]))
    return found


async def test_previews_and_iframe_playlists_of_a_transcode(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "previews-640.mp4", seconds=7, size="640x360", rate=25)
    job = await queued_video(res, clip)
    await service.transcode(res, worker_settings, job)
    video = await video_row(res, job.video_id)
    assert video.state == "ready", video.error
    assert video.master_key is not None
    root = await download_ladder(
        res.need_store(), video.master_key.rsplit("/", 1)[0] + "/", tmp_path
    )

    # The thumbnails track: contiguous cues from 0 to the end, each a tile inside its sheet.
    track = cues((root / "thumbnails.vtt").read_text())
    assert track[0][0] == 0 and track[-1][1] == pytest.approx(7, abs=0.1)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(track)), track
    sheets: dict[str, tuple[int, int]] = {}
    for start, end, payload in track:
        assert end > start
        sheet, _, fragment = payload.partition("#xywh=")
        x, y, w, h = map(int, fragment.split(","))
        if sheet not in sheets:
            sheets[sheet] = image_size(root / sheet)
        width, height = sheets[sheet]
        assert (w, h) == (160, 90) and 0 <= x and x + w <= width and 0 <= y and y + h <= height
    assert list(sheets) == ["sprites-0.jpg"]

    # I-frame playlists: in the master, one whole fragment per keyframe, each decoding on its
    # own, and ffmpeg decoding every one of them from the playlist.
    ladder = parse_ladder(root)
    check_tags(ladder, video=True)
    assert check_iframe_playlists(ladder) == 4 * len(ladder.variants)  # keyframes at 0,2,4,6 s
    for v in ladder.variants:
        assert len(keyframe_times(ladder, v)) == 4
        assert (root / v.folder / "iframes.mp4").stat().st_size > 0


async def test_an_audio_only_source_has_neither(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "previews-tone.m4a", seconds=4, video=False)
    job = await queued_video(res, clip)
    await service.transcode(res, worker_settings, job)
    video = await video_row(res, job.video_id)
    assert video.state == "ready" and video.master_key is not None
    prefix = video.master_key.rsplit("/", 1)[0] + "/"
    names = {info.key[len(prefix) :] for info in await res.need_store().list(prefix)}
    assert "master.m3u8" in names and "thumbnails.vtt" not in names
    assert not any(n.startswith("sprites-") or n.endswith("iframes.m3u8") for n in names)
    assert "I-FRAME" not in (await res.need_store().get_bytes(video.master_key)).decode()


SECONDS = 20
# The source is read at 4x its rate, so the encode lasts about 5 s whatever the machine and
# ffmpeg's once-a-second reports fall at known points of the video.
READ_RATE = "4"


async def test_progress_flows_before_the_end_with_previews_on(
    media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "preview-progress-320.mp4", seconds=SECONDS, size="320x180")
    info = await probe(str(clip), label="clip")
    rungs = plan_ladder(info)
    sprites = previews.plan_for(info.duration_seconds, rungs)
    assert sprites is not None and (sprites.columns, sprites.rows) == (10, 2)
    out = tmp_path / "hls"
    out.mkdir()
    opts = ffmpeg.EncodeOptions(preset="ultrafast", threads=1)
    cmd = ffmpeg.build_command(
        str(clip), out, info, rungs, opts, poster=tmp_path / "poster.jpg",
        sprites=sprites, sprite_dir=tmp_path,
    )  # fmt: skip
    at = cmd.index("-i")
    cmd[at:at] = ["-readrate", READ_RATE]
    reports: list[ffmpeg.Progress] = []

    async def keep(p: ffmpeg.Progress) -> None:
        reports.append(ffmpeg.Progress(p.out_time_seconds, p.fps, p.speed, p.done))

    await ffmpeg.run(cmd, on_progress=keep, timeout_seconds=60)

    # A sheet tiled inside the encode would hold every report back until the sheet is whole,
    # here at the very end of the video.
    running = [p.out_time_seconds for p in reports if not p.done]
    assert len(running) >= 2, reports
    assert running[0] < SECONDS / 2, running
    assert reports[-1].done

    tiles = sorted(p.name for p in tmp_path.glob("thumb-*.jpg"))
    assert tiles == [f"thumb-{i:05d}.jpg" for i in range(sprites.tiles)]
    sheets = await previews.make_sheets(tmp_path, sprites)
    assert [s.name for s in sheets] == ["sprites-0.jpg"]
    assert not list(tmp_path.glob("thumb-*.jpg"))
    assert image_size(sheets[0]) == (10 * 160, 2 * 90)


async def test_without_tiles_there_are_no_sheets(tmp_path: Path) -> None:
    sprites = previews.plan_sprites(30, 640, 360)
    assert sprites is not None
    assert await previews.make_sheets(tmp_path, sprites) == []
    assert list(tmp_path.iterdir()) == []
