"""tech_meta.json and loudness.json: the ebur128 summary parsed, the probe described, the
loudness pass's command."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from services.transcoder.ffmpeg import EncodeOptions, loudness_command
from services.transcoder.metadata import (
    LOUDNESS,
    NO_AUDIO,
    TECH_META,
    Loudness,
    documents,
    parse_ebur128,
    tech_meta,
)
from shared.media.ffprobe import parse_probe

# The end of ``ffmpeg -loglevel info ... -af ebur128=peak=true`` (ffmpeg 5.1), as logged.
SUMMARY = """\
Output #0, null, to 'pipe:':
  Stream #0:0: Audio: pcm_s16le, 48000 Hz, mono, s16, 768 kb/s
size=N/A time=00:00:10.00 bitrate=N/A speed= 392x
video:0kB audio:938kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_ebur128_0 @ 0x5565883e9f00] Summary:

  Integrated loudness:
    I:         -27.1 LUFS
    Threshold: -37.1 LUFS

  Loudness range:
    LRA:         1.5 LU
    Threshold: -47.2 LUFS
    LRA low:   -27.8 LUFS
    LRA high:  -26.3 LUFS

  True peak:
    Peak:      -24.1 dBFS
"""

SILENCE = """\
[Parsed_ebur128_0 @ 0x55c05fef95c0] Summary:

  Integrated loudness:
    I:         -70.0 LUFS
    Threshold:   0.0 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold:   0.0 LUFS
    LRA low:     0.0 LUFS
    LRA high:    0.0 LUFS

  True peak:
    Peak:       -inf dBFS
"""


def test_summary_values_are_read_not_the_thresholds() -> None:
    assert parse_ebur128(SUMMARY) == Loudness(
        has_audio=True, integrated_lufs=-27.1, true_peak_dbtp=-24.1, loudness_range_lu=1.5
    )


def test_the_last_summary_counts() -> None:
    earlier = SUMMARY.replace("-27.1 LUFS", "-12.0 LUFS")
    assert parse_ebur128(earlier + SUMMARY).integrated_lufs == -27.1


def test_silence_has_no_true_peak() -> None:
    loudness = parse_ebur128(SILENCE)
    assert (loudness.integrated_lufs, loudness.true_peak_dbtp) == (-70.0, None)
    json.dumps(asdict(loudness), allow_nan=False)


@pytest.mark.parametrize(
    ("log", "missing"),
    [
        ("Output #0, null, to 'pipe:':\n", "no ebur128 summary"),
        (SUMMARY.split("  True peak:")[0], "no true peak value"),
        (SUMMARY.replace("I:         -27.1", "I:         n/a"), "no integrated loudness"),
    ],
)
def test_a_log_without_the_values_is_refused(log: str, missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        parse_ebur128(log)


def test_loudness_pass_decodes_only_the_first_audio_stream() -> None:
    cmd = loudness_command("in.mp4", EncodeOptions(threads=2))
    assert cmd[cmd.index("-loglevel") + 1] == "info"  # the summary is logged at info
    assert cmd[cmd.index("-map") + 1] == "0:a:0" and cmd.count("-map") == 1
    assert cmd[cmd.index("-af") + 1] == "ebur128=peak=true:framelog=verbose"
    assert cmd[-3:] == ["-f", "null", "-"]
    assert cmd.index("-protocol_whitelist") < cmd.index("-i")


def test_tech_meta_of_a_video_with_audio() -> None:
    info = parse_probe(
        {
            "format": {"duration": "12.5", "format_name": "mov,mp4", "bit_rate": "950000"},
            "streams": [
                {
                    "codec_type": "video",
                    "codec_name": "h264",
                    "width": 1280,
                    "height": 720,
                    "avg_frame_rate": "25/1",
                },
                {
                    "codec_type": "audio",
                    "codec_name": "aac",
                    "sample_rate": "44100",
                    "channels": 2,
                },
            ],
        }
    )
    assert tech_meta(info) == {
        "duration": 12.5,
        "format": "mov,mp4",
        "bit_rate": 950000,
        "codec": "aac",
        "sample_rate": 44100,
        "channels": 2,
        "video": {
            "codec": "h264",
            "width": 1280,
            "height": 720,
            "frame_rate": 25.0,
            "rotation": 0,
        },
    }


def test_tech_meta_and_loudness_of_a_video_without_audio() -> None:
    info = parse_probe(
        {
            "format": {"duration": "3", "format_name": "matroska,webm"},
            "streams": [{"codec_type": "video", "codec_name": "vp9", "width": 64, "height": 64}],
        }
    )
    docs = {name: json.loads(body) for name, body in documents(info, NO_AUDIO).items()}
    meta = docs[TECH_META]
    assert (meta["codec"], meta["sample_rate"], meta["channels"]) == (None, None, None)
    assert meta["video"]["codec"] == "vp9"
    assert docs[LOUDNESS] == {
        "has_audio": False,
        "integrated_lufs": None,
        "true_peak_dbtp": None,
        "loudness_range_lu": None,
    }


def test_tech_meta_of_audio_only_has_no_video() -> None:
    info = parse_probe(
        {
            "format": {"duration": "9", "format_name": "wav"},
            "streams": [
                {"codec_type": "audio", "codec_name": "pcm_s16le", "sample_rate": "0"},
            ],
        }
    )
    meta = tech_meta(info)
    assert meta["video"] is None
    assert (meta["codec"], meta["sample_rate"]) == ("pcm_s16le", None)
