"""The transcode use case on real PostgreSQL, Redis, RabbitMQ, object store and ffmpeg.

Each test stores a source, writes its row (queued, no outbox job, so no worker of another test
can pick it up) and runs the job in-process, then checks the stored ladder with the strict HLS
check of ``tests.support.hls``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.transcoder import service
from services.transcoder.settings import Settings
from shared.db.models import VideoState
from shared.db.repositories import VideoRepository
from shared.mq.messages import TranscodeJob
from shared.runtime.resources import Resources
from shared.videos import progress
from tests.support.hls import (
    Ladder,
    check_bandwidth,
    check_segments_decode,
    check_tags,
    decode_variant,
    download_ladder,
    keyframe_times,
    parse_ladder,
)
from tests.support.media import ffmpeg_file, make_clip
from tests.support.transcode import queued_video


@pytest.fixture(scope="module")
def worker_settings(test_env: dict[str, str]) -> Settings:
    return Settings()


async def ready_ladder(res: Resources, job: TranscodeJob, into: Path) -> tuple[Ladder, object]:
    """The video's row (ready) and its stored ladder, downloaded into ``into``."""
    async with res.need_db().session() as session:
        video = await VideoRepository(session).get(job.video_id)
    assert video.state == "ready", video.error
    assert video.master_key is not None
    prefix = video.master_key.rsplit("/", 1)[0] + "/"
    root = await download_ladder(res.need_store(), prefix, into)
    return parse_ladder(root), video


async def test_1080p_ladder_is_strict_hls(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "t1080.mp4", seconds=6, size="1920x1080", rate=15)
    job = await queued_video(res, clip)
    outcome = await service.transcode(res, worker_settings, job)
    assert not outcome.skipped and outcome.media_seconds == pytest.approx(6, abs=0.2)

    ladder, video = await ready_ladder(res, job, tmp_path)
    check_tags(ladder, video=True)
    resolutions = [v.attrs["RESOLUTION"] for v in ladder.variants]
    assert resolutions == ["1920x1080", "1280x720", "854x480", "640x360", "426x240"]
    assert [r.name for r in video.renditions] == ["1080p", "720p", "480p", "360p", "240p"]
    assert video.poster_key and await res.need_store().exists(video.poster_key)

    # 4 s segments (the last holds the rest), each within one GOP (2 s) of the target; in
    # fact to the frame, since keyframes are forced on the 2 s grid.
    for v in ladder.variants:
        assert v.target == 4
        *full, last = v.durations
        assert full and all(abs(d - 4.0) <= 1 / 15 + 1e-6 for d in full), v.durations
        assert 0 < last <= 4.0 + 1e-6
        assert sum(v.durations) == pytest.approx(6, abs=0.1)

    # Keyframes every 2 s and at the same instants in every rung.
    grids = [keyframe_times(ladder, v) for v in ladder.variants]
    for grid in grids:
        assert grid == pytest.approx(grids[0], abs=1e-3)
    # The grid starts at the first frame's presentation time (the encoder's B-frame delay).
    start = grids[0][0]
    assert [t - start for t in grids[0]] == pytest.approx([0, 2, 4], abs=1 / 15)

    check_bandwidth(ladder, tolerance=0.10)
    for v in ladder.variants:
        check_segments_decode(ladder, v, video=True)
        assert decode_variant(ladder, v) == pytest.approx(6, abs=0.2)

    latest = await progress.latest(res.need_redis(), job.video_id)
    assert latest["stage"] == "ready" and latest["percent"] == 100.0


async def test_small_source_is_never_upscaled(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "t360.mp4", seconds=5, size="640x360")
    job = await queued_video(res, clip)
    await service.transcode(res, worker_settings, job)
    ladder, _ = await ready_ladder(res, job, tmp_path)
    check_tags(ladder, video=True)
    heights = [int(v.attrs["RESOLUTION"].split("x")[1]) for v in ladder.variants]
    assert heights == [360, 240]


async def test_portrait_source_stays_portrait(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "portrait.mp4", seconds=5, size="360x640")
    job = await queued_video(res, clip)
    await service.transcode(res, worker_settings, job)
    ladder, _ = await ready_ladder(res, job, tmp_path)
    check_tags(ladder, video=True)
    assert [v.attrs["RESOLUTION"] for v in ladder.variants] == ["360x640", "240x426"]
    for v in ladder.variants:
        check_segments_decode(ladder, v, video=True)
        width, height = map(int, v.attrs["RESOLUTION"].split("x"))
        assert width < height and width % 2 == 0 and height % 2 == 0


async def test_audio_only_source_gets_the_aac_ladder(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "tone.m4a", seconds=9, video=False)
    job = await queued_video(res, clip)
    await service.transcode(res, worker_settings, job)
    ladder, video = await ready_ladder(res, job, tmp_path)
    check_tags(ladder, video=False)
    assert [r.name for r in video.renditions] == ["aac_256", "aac_160", "aac_96"]
    assert video.poster_key is None
    assert "RESOLUTION" not in ladder.master
    for v in ladder.variants:
        check_segments_decode(ladder, v, video=False)
        assert decode_variant(ladder, v) == pytest.approx(9, abs=0.2)
    averages = [int(v.attrs["AVERAGE-BANDWIDTH"]) for v in ladder.variants]
    assert averages == sorted(averages, reverse=True)


async def test_source_without_audio(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    clip = make_clip(media_dir / "silent.mp4", seconds=5, size="426x240", audio=False)
    job = await queued_video(res, clip)
    await service.transcode(res, worker_settings, job)
    ladder, _ = await ready_ladder(res, job, tmp_path)
    check_tags(ladder, video=True)
    assert all("mp4a" not in v.attrs["CODECS"] for v in ladder.variants)
    check_segments_decode(ladder, ladder.variants[0], video=True)
    assert json.loads((ladder.root / "loudness.json").read_text()) == {
        "has_audio": False,
        "integrated_lufs": None,
        "true_peak_dbtp": None,
        "loudness_range_lu": None,
    }
    meta = json.loads((ladder.root / "tech_meta.json").read_text())
    (stream,) = ffprobe_json(clip)["streams"]
    assert (meta["codec"], meta["sample_rate"], meta["channels"]) == (None, None, None)
    assert meta["video"] == {
        "codec": stream["codec_name"],
        "width": stream["width"],
        "height": stream["height"],
        "frame_rate": pytest.approx(25.0),
        "rotation": 0,
    }


def ffprobe_json(path: Path) -> dict[str, Any]:
    """ffprobe's own description of ``path``."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def ebur128_of(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBFS) that ``ffmpeg -af ebur128`` reports on ``path``."""
    log = subprocess.run(
        ["ffmpeg", "-nostats", "-i", path, "-af", "ebur128=peak=true", "-f", "null", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    summary = log.rsplit("Summary:", 1)[1]
    integrated = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary)
    assert integrated and peak, summary
    return float(integrated.group(1)), float(peak.group(1))


async def test_loudness_and_tech_meta_of_a_tone_at_a_known_level(
    res: Resources, worker_settings: Settings, media_dir: Path, tmp_path: Path
) -> None:
    # lavfi's sine has an amplitude of 1/8 (-18.1 dBFS); 6 dB less is -24.1 dBFS, an RMS of
    # -27.1 dB, and a 1 kHz tone is the frequency where LUFS equals RMS dBFS (mono).
    tone = ffmpeg_file(
        media_dir / "tone-1k-minus-27-lufs.flac",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=8",
        "-af", "volume=-6dB", "-c:a", "flac",
    )  # fmt: skip
    source_lufs, source_peak = ebur128_of(tone)
    assert source_lufs == pytest.approx(-27.1, abs=0.5)

    job = await queued_video(res, tone)
    await service.transcode(res, worker_settings, job)
    ladder, _ = await ready_ladder(res, job, tmp_path)
    loudness = json.loads((ladder.root / "loudness.json").read_text())
    assert loudness["has_audio"] is True
    assert loudness["integrated_lufs"] == pytest.approx(source_lufs, abs=0.5)
    assert loudness["true_peak_dbtp"] == pytest.approx(source_peak, abs=0.5)
    assert loudness["loudness_range_lu"] == pytest.approx(0.0, abs=0.5)  # a steady tone

    probed = ffprobe_json(tone)
    (stream,) = probed["streams"]
    meta = json.loads((ladder.root / "tech_meta.json").read_text())
    assert meta == {
        "duration": pytest.approx(float(probed["format"]["duration"])),
        "format": probed["format"]["format_name"],
        "bit_rate": int(probed["format"]["bit_rate"]),
        "codec": stream["codec_name"],
        "sample_rate": int(stream["sample_rate"]),
        "channels": stream["channels"],
        "video": None,
    }
    assert (meta["codec"], meta["sample_rate"], meta["channels"]) == ("flac", 48000, 1)


async def test_redelivery_replaces_a_dead_runs_objects(
    res: Resources, worker_settings: Settings, media_dir: Path
) -> None:
    clip = make_clip(media_dir / "t360.mp4", seconds=5, size="640x360")
    job = await queued_video(res, clip)
    store = res.need_store()
    # A run that died mid-job: the row says transcoding and its objects are still there.
    dead = service.run_prefix(job.video_id, "deadrun")
    await store.put_bytes(dead + "360p/seg_00000.m4s", b"half a segment")
    await store.put_bytes(dead + "master.m3u8", b"#EXTM3U\n")
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        video = await repo.get(job.video_id)
        await repo.transition(video, VideoState.transcoding)
        await repo.set_fields(job.video_id, master_key=dead + "master.m3u8")

    await service.transcode(res, worker_settings, job)
    again = await service.transcode(res, worker_settings, job)
    assert again.skipped

    keys = [o.key for o in await store.list(service.hls_root(job.video_id))]
    runs = {k[len(service.hls_root(job.video_id)) :].split("/", 1)[0] for k in keys}
    assert len(runs) == 1 and "deadrun" not in runs
    async with res.need_db().session() as session:
        video = await VideoRepository(session).get(job.video_id)
    assert video.state == "ready"
    assert [r.name for r in video.renditions] == ["360p", "240p"]
    run = service.hls_root(job.video_id) + runs.pop()
    assert all(r.playlist_key.startswith(run) for r in video.renditions)


async def test_duplicate_deliveries_at_once_transcode_once(
    res: Resources, worker_settings: Settings, media_dir: Path
) -> None:
    clip = make_clip(media_dir / "t360.mp4", seconds=5, size="640x360")
    job = await queued_video(res, clip)
    first, second = await asyncio.gather(
        service.transcode(res, worker_settings, job),
        service.transcode(res, worker_settings, job.model_copy(update={"job_id": uuid.uuid4()})),
    )
    assert sorted([first.skipped, second.skipped]) == [False, True]
    keys = [o.key for o in await res.need_store().list(service.hls_root(job.video_id))]
    runs = {k.split("/hls/", 1)[1].split("/", 1)[0] for k in keys}
    assert len(runs) == 1
    async with res.need_db().session() as session:
        video = await VideoRepository(session).get(job.video_id)
    assert [r.name for r in video.renditions] == ["360p", "240p"]
