"""ffprobe parsing, probing real files made by ffmpeg, and the limits on what they hold."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from shared.core.errors import NotMedia
from shared.core.settings import BaseServiceSettings
from shared.media import tools
from shared.media.ffprobe import MediaInfo, parse_probe, probe
from shared.media.inputs import check_format
from shared.media.limits import MediaLimits
from tests.support.media import ffmpeg_file, make_clip


def test_rotation_swaps_display_size() -> None:
    info = parse_probe(
        {
            "format": {"duration": "3.0", "format_name": "mov"},
            "streams": [
                {
                    "codec_type": "video",
                    "width": 1920,
                    "height": 1080,
                    "avg_frame_rate": "30000/1001",
                    "side_data_list": [{"rotation": -90}],
                }
            ],
        }
    )
    assert info.display_size == (1080, 1920)
    assert info.frame_rate == pytest.approx(29.97, abs=0.01)
    assert not info.has_audio


def test_cover_art_is_not_video() -> None:
    info = parse_probe(
        {
            "format": {"duration": "10"},
            "streams": [
                {"codec_type": "audio", "codec_name": "mp3", "channels": 2},
                {
                    "codec_type": "video",
                    "width": 500,
                    "height": 500,
                    "disposition": {"attached_pic": 1},
                },
            ],
        }
    )
    assert info.has_audio and not info.has_video


def test_nothing_playable_is_not_media() -> None:
    with pytest.raises(NotMedia, match="no audio or video"):
        parse_probe({"format": {"duration": "1"}, "streams": [{"codec_type": "data"}]})
    with pytest.raises(NotMedia, match="duration"):
        parse_probe({"format": {}, "streams": [{"codec_type": "audio"}]})


async def test_probe_real_clip(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=2, size="320x240", rate=25)
    info = await probe(str(clip))
    assert (info.width, info.height) == (320, 240)
    assert info.has_audio and info.has_video
    assert info.duration_seconds == pytest.approx(2.0, abs=0.2)
    assert info.frame_rate == 25


async def test_probe_text_file_is_not_media(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_text("hello")
    with pytest.raises(NotMedia, match="not a recognised media file"):
        await probe(str(junk))


def test_streams_are_counted() -> None:
    info = parse_probe(
        {
            "format": {"duration": "1", "format_name": "matroska,webm"},
            "streams": [{"codec_type": "audio"}] * 3 + [{"codec_type": "subtitle"}],
        }
    )
    assert info.stream_count == 4


async def test_the_refusal_names_no_path_and_the_log_keeps_ffprobe_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 4096)
    with caplog.at_level(logging.INFO, logger="shared.media.ffprobe"):
        with pytest.raises(NotMedia) as refused:
            await probe(str(junk), label="video 1234")
    assert refused.value.detail == "the file is not a recognised media file"
    assert str(tmp_path) not in refused.value.detail
    assert "video 1234" in caplog.text and "junk.bin" in caplog.text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # Without the whitelists both would be read, as "hls" and "concat", from the name
        # the store gives every source.
        ("source", "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{clip}\n#EXT-X-ENDLIST\n"),
        ("source", "ffconcat version 1.0\nfile '{clip.name}'\n"),
        ("session.sdp", "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
         "m=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\n"),
    ],
    ids=["hls", "concat", "sdp"],
)  # fmt: skip
async def test_files_that_name_other_files_are_not_media(
    tmp_path: Path, name: str, text: str
) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=1, size="160x120")
    script = tmp_path / name
    script.write_text(text.format(clip=clip))
    with pytest.raises(NotMedia, match="not a recognised media file"):
        await probe(str(script))


async def test_an_image_sequence_is_not_media(tmp_path: Path) -> None:
    frames = tmp_path / "frame%03d.png"
    ffmpeg_file(frames, "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5", "-frames:v", "3")
    with pytest.raises(NotMedia):
        await probe(str(tmp_path / "frame001.png"))
    with pytest.raises(NotMedia):
        await probe(str(frames))


@pytest.mark.parametrize("suffix", ["mkv", "webm", "ts", "mpg", "avi", "flv", "mov", "ogg"])
async def test_ordinary_containers_probe(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"clip.{suffix}"
    codecs = {"webm": ["-c:v", "libvpx", "-c:a", "libopus"], "ogg": ["-c:v", "libtheora"]}
    ffmpeg_file(
        path,
        "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1",
        "-f", "lavfi", "-i", "sine=duration=1", *codecs.get(suffix, []),
    )  # fmt: skip
    info = await probe(str(path))
    assert info.has_video and info.width == 64


async def test_audio_containers_probe(tmp_path: Path) -> None:
    for suffix in ("wav", "mp3", "flac", "m4a", "aac", "wma"):
        path = tmp_path / f"tone.{suffix}"
        ffmpeg_file(path, "-f", "lavfi", "-i", "sine=duration=1")
        info = await probe(str(path))
        assert info.has_audio and not info.has_video, suffix


@pytest.mark.parametrize(
    "format_name", ["hls", "concat", "image2", "sdp", "png_pipe", "dash", "tty", ""]
)
def test_formats_that_refer_to_other_files_are_refused(format_name: str) -> None:
    with pytest.raises(NotMedia, match="format is not accepted"):
        check_format(format_name)


def test_accepted_formats_pass() -> None:
    for name in ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts", "wav", "asf"):
        check_format(name)


LIMITS = MediaLimits(
    max_duration_seconds=3600,
    max_width_pixels=8192,
    max_height_pixels=8192,
    max_frame_pixels=8192 * 4320,
    max_frame_rate_fps=120,
    max_streams=16,
)


def clip_info(**fields: Any) -> MediaInfo:
    base: dict[str, Any] = {
        "duration_seconds": 60.0,
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "bit_rate": None,
        "has_video": True,
        "has_audio": True,
        "width": 1920,
        "height": 1080,
        "frame_rate": 30.0,
        "stream_count": 2,
    }
    return MediaInfo(**{**base, **fields})


def test_media_within_the_limits_passes() -> None:
    LIMITS.check(clip_info())
    LIMITS.check(clip_info(width=8192, height=4320, frame_rate=120, stream_count=16))
    LIMITS.check(clip_info(width=4320, height=8192, duration_seconds=3600))
    LIMITS.check(clip_info(has_video=False, width=None, height=None, frame_rate=None))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"duration_seconds": 7200}, "the video is 7200 s long; the limit is 3600 s"),
        (
            {"duration_seconds": 5000, "has_video": False, "width": None, "height": None},
            "the audio is 5000 s long; the limit is 3600 s",
        ),
        ({"width": 8200, "height": 100}, "8200 pixels wide; the limit is 8192"),
        ({"width": 100, "height": 8200}, "8200 pixels high; the limit is 8192"),
        ({"width": 8192, "height": 8192}, "67108864 pixels (8192x8192); the limit is 35389440"),
        ({"frame_rate": 240}, "240 frames per second; the limit is 120"),
        ({"stream_count": 17}, "17 streams; the limit is 16"),
    ],
)
def test_each_limit_is_named_when_exceeded(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(NotMedia) as refused:
        LIMITS.check(clip_info(**fields))
    assert words in refused.value.detail


def test_limits_come_from_the_settings() -> None:
    settings = BaseServiceSettings(media_max_duration_seconds=10, media_max_streams=4)
    limits = MediaLimits.from_settings(settings)
    assert (limits.max_duration_seconds, limits.max_streams) == (10, 4)
    assert limits.max_frame_pixels == 8192 * 4320 and limits.max_frame_rate_fps == 120


async def test_a_probe_past_its_time_is_killed(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=1, size="160x120")
    with pytest.raises(NotMedia, match="took too long"):
        await probe(str(clip), timeout_seconds=0.001)


async def test_only_the_tail_of_a_tool_output_is_kept() -> None:
    stream = asyncio.StreamReader()
    stream.feed_data(b"a" * 200_000 + b"the end")
    stream.feed_eof()
    tail = await tools.read_tail(stream)
    assert len(tail) == tools.STDERR_TAIL_BYTES and tail.endswith(b"the end")
