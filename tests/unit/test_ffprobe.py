"""ffprobe parsing, and probing real files made by ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.core.errors import NotMedia
from shared.media.ffprobe import parse_probe, probe
from tests.support.media import make_clip


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
