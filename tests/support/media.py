"""Media files made for tests: clips, HLS ladders, large padded and truncated copies."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

# make_clip(path, seconds=, size=, ...): a test pattern with a tone, made once per path.
from shared.media.samples import synthetic_clip as make_clip

MIB = 1024 * 1024


def ffmpeg_file(path: Path, *args: str) -> Path:
    """What ffmpeg makes of ``args`` (inputs, filters, codecs) at ``path``, made once per path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(path)], check=True)
    return path


def faststart_clip(path: Path, *, seconds: float, size: str) -> Path:
    """A clip with its index (moov) first, so a truncated copy still probes as whole."""
    return make_clip(path, seconds=seconds, size=size, faststart=True)


def truncate(source: Path, into: Path, fraction: float) -> Path:
    """The first ``fraction`` of the bytes of ``source``."""
    data = source.read_bytes()
    into.write_bytes(data[: int(len(data) * fraction)])
    return into


def make_ladder(folder: Path, *, seconds: int, segment_seconds: int = 2) -> Path:
    """Two-rung fMP4 HLS (640x360 and 320x180, AAC) of a test pattern; cached by parameters."""
    out = folder / f"ladder-{seconds}s-{segment_seconds}s"
    if (out / "master.m3u8").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gop = 25 * segment_seconds
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-filter_complex", "[0:v]split=2[a][b];[a]null[v0];[b]scale=320:180[v1]",
            "-map", "[v0]", "-map", "1:a", "-map", "[v1]", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-b:v:0", "900k", "-b:v:1", "250k", "-c:a", "aac", "-b:a", "64k",
            "-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
            "-hls_segment_filename", str(tmp / "%v" / "seg_%05d.m4s"),
            "-master_pl_name", "master.m3u8",
            "-var_stream_map", "v:0,a:0,name:360p v:1,a:1,name:180p",
            str(tmp / "%v" / "index.m3u8"),
        ],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=1",
         "-frames:v", "1", str(tmp / "poster.jpg")],
        check=True,
    )  # fmt: skip
    tmp.rename(out)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def padded_media(clip: Path, dest: Path, total_bytes: int, *, random: bool = True) -> Path:
    """``clip`` (an MP4) then an MP4 ``free`` box, ``total_bytes`` in all: still valid media."""
    if dest.exists() and dest.stat().st_size == total_bytes:
        return dest
    head = clip.read_bytes()
    pad = total_bytes - len(head)
    if pad < 8 or pad >= 2**32:
        raise ValueError("padding must fit one 32-bit MP4 box")
    with dest.open("wb") as out:
        out.write(head)
        out.write(struct.pack(">I4s", pad, b"free"))
        left = pad - 8
        block = os.urandom(MIB) if random else bytes(MIB)
        while left > 0:
            out.write(block[: min(left, MIB)])
            left -= MIB
    return dest
