"""The WebVTT thumbnails track: its name beside the master playlist and its image URIs.

Each cue's payload is one image URI, usually with a spatial fragment naming a sprite tile
(``sprites-0.jpg#xywh=0,0,160,90``). Like a playlist's URIs, they are relative to the track, so
the origin can sign them and a path token covers them.
"""

from __future__ import annotations

from collections.abc import Callable

THUMBNAILS = "thumbnails.vtt"
_ARROW = "-->"


def _seconds(stamp: str) -> float:
    """``hh:mm:ss.mmm`` or ``mm:ss.mmm`` as seconds; ValueError for anything else."""
    parts = stamp.strip().split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"not a WebVTT timestamp: {stamp!r}")
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


def rewrite_thumbnails(text: str, rewrite: Callable[[str], str]) -> str:
    """Apply ``rewrite`` to the payload line of every cue (the line after its timing)."""
    out: list[str] = []
    after_timing = False
    for line in text.splitlines():
        if after_timing and line.strip():
            line = rewrite(line.strip())
        after_timing = _ARROW in line
        out.append(line)
    return "\n".join(out) + "\n"


def last_cue_end(text: str) -> float:
    """Where the track's last cue ends, in seconds (0 for a track without cues)."""
    end = 0.0
    for line in text.splitlines():
        if _ARROW in line:
            try:
                end = max(end, _seconds(line.split(_ARROW, 1)[1].split()[0]))
            except (ValueError, IndexError):
                continue
    return end
