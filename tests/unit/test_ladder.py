"""The ladder plan, the ffmpeg command and the playlist arithmetic, without running ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.ffmpeg import EncodeOptions, build_command
from services.transcoder.ladder import plan_ladder
from services.transcoder.package import (
    avc_codec,
    master_playlist,
    peak_bitrate,
    planned_variant,
    vod_playlist,
)
from shared.media.ffprobe import MediaInfo


def video(
    width: int, height: int, *, fps: float = 30, audio: bool = True, rotation: int = 0
) -> MediaInfo:
    return MediaInfo(
        duration_seconds=30,
        format_name="mov,mp4",
        bit_rate=None,
        has_video=True,
        has_audio=audio,
        width=width,
        height=height,
        frame_rate=fps,
        rotation=rotation,
    )


def sizes(info: MediaInfo) -> list[tuple[int | None, int | None]]:
    return [(r.width, r.height) for r in plan_ladder(info)]


def test_1080p_source_gets_every_rung_down_to_240p() -> None:
    assert sizes(video(1920, 1080)) == [
        (1920, 1080),
        (1280, 720),
        (854, 480),
        (640, 360),
        (426, 240),
    ]


def test_4k_source_adds_2160p_and_1440p() -> None:
    names = [r.name for r in plan_ladder(video(3840, 2160))]
    assert names == ["2160p", "1440p", "1080p", "720p", "480p", "360p", "240p"]


@pytest.mark.parametrize(
    ("width", "height", "top"),
    [
        (16384, 16384, (2160, 2160)),
        (7680, 4320, (3840, 2160)),
        (4320, 7680, (2160, 3840)),
        (5000, 3000, (3600, 2160)),
        (4096, 2160, (4096, 2160)),
        (8192, 1000, (4096, 500)),
    ],
)
def test_the_top_rung_never_goes_above_2160p(width: int, height: int, top: tuple[int, int]) -> None:
    planned = plan_ladder(video(width, height))
    assert (planned[0].width, planned[0].height) == top
    for rung in planned:
        assert rung.width is not None and rung.height is not None
        assert min(rung.width, rung.height) <= 2160 and max(rung.width, rung.height) <= 4096
        assert rung.width % 2 == 0 and rung.height % 2 == 0
        assert rung.width / rung.height == pytest.approx(width / height, rel=0.01)
    assert planned[0].name == f"{min(top)}p"


def test_a_huge_source_gets_the_4k_bitrate_at_most() -> None:
    top = plan_ladder(video(16384, 16384))[0]
    assert (top.name, top.video_kbps) == ("2160p", 12000)


def test_never_upscales() -> None:
    assert sizes(video(640, 360)) == [(640, 360), (426, 240)]
    assert max(h for _, h in sizes(video(640, 360))) == 360  # type: ignore[type-var]


def test_portrait_stays_portrait_with_even_sizes() -> None:
    planned = sizes(video(1080, 1920))
    assert planned[0] == (1080, 1920)
    for w, h in planned:
        assert w is not None and h is not None
        assert w < h and w % 2 == 0 and h % 2 == 0


def test_rotation_metadata_counts_as_portrait() -> None:
    assert sizes(video(1920, 1080, rotation=90))[0] == (1080, 1920)


def test_in_between_source_keeps_its_own_size_on_top() -> None:
    planned = plan_ladder(video(1918, 1078))
    assert (planned[0].width, planned[0].height) == (1918, 1078)
    assert [r.name for r in planned[1:]] == ["720p", "480p", "360p", "240p"]
    assert all(r.width % 2 == 0 and r.height % 2 == 0 for r in planned)  # type: ignore[operator]


def test_aspect_ratio_is_kept() -> None:
    for w, h in sizes(video(1440, 1080)):
        assert w is not None and h is not None
        assert w / h == pytest.approx(4 / 3, rel=0.01)


def test_bitrates_fall_with_the_rung_and_rise_with_the_frame_rate() -> None:
    normal = plan_ladder(video(1920, 1080))
    fast = plan_ladder(video(1920, 1080, fps=60))
    rates = [r.video_kbps for r in normal]
    assert rates == sorted(rates, reverse=True)
    assert all(f.video_kbps > n.video_kbps for f, n in zip(fast, normal, strict=True))
    for r in normal:
        assert r.maxrate_kbps > r.video_kbps and r.bufsize_kbps >= r.maxrate_kbps


def test_audio_only_source_gets_the_aac_ladder() -> None:
    info = MediaInfo(
        duration_seconds=10, format_name="mp3", bit_rate=None, has_video=False, has_audio=True
    )
    assert [(r.kind, r.audio_kbps) for r in plan_ladder(info)] == [
        ("audio", 256),
        ("audio", 160),
        ("audio", 96),
    ]


def test_one_ffmpeg_command_decodes_once_and_encodes_every_rung(tmp_path: Path) -> None:
    info = video(1920, 1080, fps=25)
    rungs = plan_ladder(info)
    cmd = build_command("in.mp4", tmp_path, info, rungs, EncodeOptions(), poster=tmp_path / "p.jpg")
    assert cmd.count("-i") == 1
    graph = cmd[cmd.index("-filter_complex") + 1]
    assert graph.startswith(f"[0:v:0]split={len(rungs) + 1}")
    assert cmd[cmd.index("-g") + 1] == "50"  # an IDR every 2 s at 25 fps
    assert cmd[cmd.index("-sc_threshold") + 1] == "0"
    assert cmd[cmd.index("-hls_time") + 1] == "4"
    assert cmd[cmd.index("-hls_playlist_type") + 1] == "event"
    assert cmd[cmd.index("-hls_segment_type") + 1] == "fmp4"
    assert "independent_segments" in cmd[cmd.index("-hls_flags") + 1]
    assert cmd[cmd.index("-var_stream_map") + 1].split() == [
        f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(rungs)
    ]
    assert "-maxrate:v:0" in cmd and f"-bufsize:v:{len(rungs) - 1}" in cmd


def test_peak_bitrate_follows_rfc_8216() -> None:
    # Windows of 2..6 s (target 4): a 4 s segment of 1 MB beats the short last one's window.
    sizes_ = [1_000_000, 500_000, 100_000]
    durations = [4.0, 4.0, 1.0]
    peak = peak_bitrate(sizes_, durations, 4)
    assert peak == pytest.approx(2_000_000)
    # A lone 1 s segment is outside every window, so it cannot inflate the peak.
    assert peak_bitrate([10, 1_000_000], [4.0, 1.0], 4) == pytest.approx(1_000_010 * 8 / 5)


def test_avc_codec_string_from_the_init_segment() -> None:
    init = b"\x00\x00\x00\x2eavcC\x01\x64\x00\x28\xff"
    assert avc_codec(init) == "avc1.640028"
    assert avc_codec(b"no such box") is None


def test_event_playlist_becomes_vod() -> None:
    event = "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXTINF:4.0,\na.m4s\n#EXT-X-ENDLIST\n"
    vod = vod_playlist(event)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod.count("#EXT-X-ENDLIST") == 1
    assert vod_playlist(event.replace("#EXT-X-ENDLIST\n", "")).endswith("#EXT-X-ENDLIST\n")


def test_master_lists_the_highest_rung_first_with_every_attribute() -> None:
    info = video(1280, 720, fps=25)
    stats = [planned_variant(r, "avc1.64001f,mp4a.40.2") for r in reversed(plan_ladder(info))]
    master = master_playlist(stats, info)
    lines = master.splitlines()
    assert lines[:3] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    assert "RESOLUTION=1280x720" in lines[3] and lines[4] == "720p/index.m3u8"
    for line in lines[3::2]:
        for attr in ("BANDWIDTH=", "AVERAGE-BANDWIDTH=", "CODECS=", "FRAME-RATE=25.000"):
            assert attr in line
