"""The two descriptions stored beside a ladder: ``tech_meta.json`` and ``loudness.json``.

``tech_meta.json`` is what ffprobe saw of the source (the probe the ladder was planned from,
not a second one). ``loudness.json`` holds the source's integrated loudness (EBU R128, LUFS),
true peak and loudness range, as ffmpeg's ``ebur128`` filter measures them.

The loudness is measured by a second ffmpeg process over the audio alone, run alongside the
ladder's. The ladder's ffmpeg logs at the error level, so that its log tail is the reason a
failure shows; ``ebur128`` prints its summary at the info level, among every other line the
info level brings. The audio-only pass decodes no video (ten minutes of AAC take under two
seconds) and ends long before the encode, so the job takes no longer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from services.transcoder import ffmpeg
from shared.media.ffprobe import MediaInfo

TECH_META = "tech_meta.json"
LOUDNESS = "loudness.json"

_SUMMARY = "Summary:"
# "I:  -23.0 LUFS", "LRA:  4.1 LU", "Peak:  -1.2 dBFS" (true peak; "-inf" for silence).
_VALUE = r"^\s*{name}:\s+(-?(?:inf|\d+(?:\.\d+)?))\s+{unit}\s*$"
_INTEGRATED = re.compile(_VALUE.format(name="I", unit="LUFS"), re.MULTILINE)
_RANGE = re.compile(_VALUE.format(name="LRA", unit="LU"), re.MULTILINE)
_TRUE_PEAK = re.compile(_VALUE.format(name="Peak", unit="dBFS"), re.MULTILINE)


@dataclass(frozen=True)
class Loudness:
    has_audio: bool
    integrated_lufs: float | None = None
    true_peak_dbtp: float | None = None
    loudness_range_lu: float | None = None


NO_AUDIO = Loudness(has_audio=False)


def _number(name: str, pattern: re.Pattern[str], summary: str) -> float | None:
    match = pattern.search(summary)
    if match is None:
        raise ValueError(f"the ebur128 summary has no {name} value")
    value = float(match.group(1))
    # Silence has a true peak of -inf, which JSON cannot carry.
    return value if math.isfinite(value) else None


def parse_ebur128(log: str) -> Loudness:
    """The values of the last ``ebur128`` summary in an ffmpeg log."""
    at = log.rfind(_SUMMARY)
    if at < 0:
        raise ValueError("ffmpeg printed no ebur128 summary")
    summary = log[at + len(_SUMMARY) :]
    return Loudness(
        has_audio=True,
        integrated_lufs=_number("integrated loudness", _INTEGRATED, summary),
        true_peak_dbtp=_number("true peak", _TRUE_PEAK, summary),
        loudness_range_lu=_number("loudness range", _RANGE, summary),
    )


async def measure_loudness(
    source: str, info: MediaInfo, opts: ffmpeg.EncodeOptions, timeout_seconds: float
) -> Loudness:
    """The loudness of the source's first audio stream; ``NO_AUDIO`` when it has none."""
    if not info.has_audio:
        return NO_AUDIO
    log = await ffmpeg.run(ffmpeg.loudness_command(source, opts), timeout_seconds=timeout_seconds)
    return parse_ebur128(log)


def tech_meta(info: MediaInfo) -> dict[str, Any]:
    """The source's technical description; audio fields are null without audio, ``video``
    is null without video."""
    video = None
    if info.has_video:
        video = {
            "codec": info.video_codec,
            "width": info.width,
            "height": info.height,
            "frame_rate": info.frame_rate,
            "rotation": info.rotation,
        }
    return {
        "duration": info.duration_seconds,
        "format": info.format_name,
        "bit_rate": info.bit_rate,
        "codec": info.audio_codec,
        "sample_rate": info.audio_sample_rate,
        "channels": info.audio_channels,
        "video": video,
    }


def documents(info: MediaInfo, loudness: Loudness) -> dict[str, bytes]:
    """The JSON bodies stored beside the ladder, by file name."""
    return {
        TECH_META: _json(tech_meta(info)),
        LOUDNESS: _json(asdict(loudness)),
    }


def _json(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()
