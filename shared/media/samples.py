"""Synthetic media made by ffmpeg: the demo video of a local run, and test and benchmark clips."""

from __future__ import annotations

import subprocess
from pathlib import Path


def synthetic_clip(
    path: Path,
    *,
    seconds: float = 4,
    size: str = "640x360",
    rate: int = 25,
    audio: bool = True,
    video: bool = True,
    faststart: bool = False,
) -> Path:
    """A test pattern with a 440 Hz tone (H.264/AAC in MP4, or AAC in M4A without video).

    Made once: an existing file at ``path`` is returned as it is. ``faststart`` puts the index
    (moov) first, so a truncated copy still probes as whole.
    """
    if path.exists():
        return path
    args = ["ffmpeg", "-v", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(rate)]
    if audio:
        args += ["-c:a", "aac", "-b:a", "128k"]
    if faststart:
        args += ["-movflags", "+faststart"]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*args, str(path)], check=True)
    return path
