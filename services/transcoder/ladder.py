"""Plan an ABR ladder from what ffprobe saw: never upscale, keep the aspect ratio.

The top rung is at most 2160 lines on its short side and 4096 pixels on its long side (DCI
4K), however large the source: a bigger rung would cost more to encode than any player gains.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from shared.media.ffprobe import MediaInfo

# Short-side height -> H.264 target bitrate (kb/s) at up to 30 fps, after Apple's HLS authoring
# guidance. High frame rates get 1.5x.
VIDEO_TABLE: tuple[tuple[int, int], ...] = (
    (2160, 12000),
    (1440, 7000),
    (1080, 4500),
    (720, 2500),
    (480, 1200),
    (360, 700),
    (240, 350),
)
AUDIO_LADDER_KBPS: tuple[int, ...] = (256, 160, 96)
VIDEO_AUDIO_KBPS = 128
MAX_SHORT_SIDE = VIDEO_TABLE[0][0]
MAX_LONG_SIDE = 4096
MAXRATE_FACTOR = 1.25
BUFSIZE_FACTOR = 2.0


@dataclass(frozen=True)
class Rung:
    name: str
    kind: str  # "video" or "audio"
    width: int | None
    height: int | None
    video_kbps: int
    audio_kbps: int

    @property
    def maxrate_kbps(self) -> int:
        return int(self.video_kbps * MAXRATE_FACTOR)

    @property
    def bufsize_kbps(self) -> int:
        return int(self.video_kbps * BUFSIZE_FACTOR)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def plan_ladder(info: MediaInfo) -> list[Rung]:
    """Rungs from the source's size (within the caps) down to 240p; AAC for audio-only sources."""
    size = info.display_size
    if not info.has_video or size is None:
        return [Rung(f"aac_{kbps}", "audio", None, None, 0, kbps) for kbps in AUDIO_LADDER_KBPS]
    width, height = size
    portrait = height > width
    fps_factor = 1.5 if (info.frame_rate or 30) > 31 else 1.0
    audio = VIDEO_AUDIO_KBPS if info.has_audio else 0
    top = top_short_side(width, height)
    heights = [h for h, _ in VIDEO_TABLE if h <= top]
    rungs: list[Rung] = []
    if not heights or heights[0] < top:
        # A source between table sizes (or below 240p) keeps its own size as the top rung.
        top_kbps = _interpolate_kbps(top)
        rungs.append(_rung(width, height, top, portrait, top_kbps * fps_factor, audio))
    for h, kbps in VIDEO_TABLE:
        if h <= top:
            rungs.append(_rung(width, height, h, portrait, kbps * fps_factor, audio))
    return rungs


def top_short_side(width: int, height: int) -> int:
    """The short side of the largest rung: the source's own, scaled down into the caps."""
    short, long = min(width, height), max(width, height)
    return min(short, MAX_SHORT_SIDE, short * MAX_LONG_SIDE // long)


def _interpolate_kbps(short: int) -> int:
    table = sorted(VIDEO_TABLE)
    if short <= table[0][0]:
        return max(150, int(table[0][1] * (short / table[0][0]) ** 2))
    for (h0, k0), (h1, k1) in itertools.pairwise(table):
        if h0 <= short <= h1:
            return int(k0 + (k1 - k0) * (short - h0) / (h1 - h0))
    return table[-1][1]


def _rung(width: int, height: int, short: int, portrait: bool, kbps: float, audio: int) -> Rung:
    if portrait:
        w, h = _even(short), _even(height * short / width)
    else:
        w, h = _even(width * short / height), _even(short)
    return Rung(f"{short}p", "video", w, h, int(kbps), audio)
