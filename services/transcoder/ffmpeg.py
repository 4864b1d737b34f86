"""Build and run the one ffmpeg process that writes a whole HLS ladder."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from services.transcoder.ladder import Rung
from shared.media.ffprobe import MediaInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeOptions:
    segment_seconds: int = 4
    gop_seconds: int = 2
    preset: str = "veryfast"
    threads: int = 0


@dataclass
class Progress:
    out_time_seconds: float = 0.0
    fps: float = 0.0
    speed: float = 0.0
    done: bool = False

    def percent(self, duration: float) -> float:
        if self.done:
            return 100.0
        return round(min(99.9, 100.0 * self.out_time_seconds / duration), 1) if duration else 0.0


ProgressCallback = Callable[[Progress], Awaitable[None]]


def poster_seconds(info: MediaInfo) -> float:
    """Where the poster frame is taken: a third of the way in, at most 5 s."""
    return round(min(5.0, info.duration_seconds / 3), 2)


def build_command(
    source: str,
    out_dir: Path,
    info: MediaInfo,
    rungs: list[Rung],
    opts: EncodeOptions,
    *,
    poster: Path | None = None,
) -> list[str]:
    """ffmpeg arguments: decode once, split, scale and encode every rung, fMP4 HLS out.

    Playlists are written as EVENT playlists (segments appear as they are finished, the
    playlist is replaced atomically), and the optional poster frame comes out of the same
    decode as one more branch of the split.
    """
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-progress",
        "pipe:1",
        "-stats_period",
        "1",
        "-i",
        source,
    ]
    video_rungs = [r for r in rungs if r.kind == "video"]
    streams: list[str] = []
    if video_rungs:
        n = len(video_rungs)
        branches = n + (1 if poster is not None else 0)
        labels = "".join(f"[s{i}]" for i in range(branches))
        chains = [f"[0:v:0]split={branches}{labels}"] if branches > 1 else []
        for i, rung in enumerate(video_rungs):
            src = f"[s{i}]" if branches > 1 else "[0:v:0]"
            chains.append(
                f"{src}scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,format=yuv420p[v{i}]"
            )
        if poster is not None:
            chains.append(
                f"[s{n}]select='gte(t\\,{poster_seconds(info)})',"
                "scale='min(640,iw)':-2,setsar=1[poster]"
            )
        cmd += ["-filter_complex", ";".join(chains)]
        for i in range(n):
            cmd += ["-map", f"[v{i}]"]
        if info.has_audio:
            for _ in range(n):
                cmd += ["-map", "0:a:0"]
        gop_frames = max(1, round((info.frame_rate or 30) * opts.gop_seconds))
        cmd += [
            "-c:v",
            "libx264",
            "-preset",
            opts.preset,
            "-profile:v",
            "high",
            "-g",
            str(gop_frames),
            "-keyint_min",
            str(gop_frames),
            "-sc_threshold",
            "0",
            "-force_key_frames",
            f"expr:gte(t,n_forced*{opts.gop_seconds})",
        ]
        for i, rung in enumerate(video_rungs):
            cmd += [
                f"-b:v:{i}",
                f"{rung.video_kbps}k",
                f"-maxrate:v:{i}",
                f"{rung.maxrate_kbps}k",
                f"-bufsize:v:{i}",
                f"{rung.bufsize_kbps}k",
            ]
        if info.has_audio:
            cmd += [
                "-c:a",
                "aac",
                "-b:a",
                f"{video_rungs[0].audio_kbps}k",
                "-ac",
                "2",
                "-ar",
                "48000",
            ]
            streams = [f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(video_rungs)]
        else:
            streams = [f"v:{i},name:{r.name}" for i, r in enumerate(video_rungs)]
    else:
        for _ in rungs:
            cmd += ["-map", "0:a:0"]
        cmd += ["-c:a", "aac", "-ac", "2", "-ar", "48000"]
        for i, rung in enumerate(rungs):
            cmd += [f"-b:a:{i}", f"{rung.audio_kbps}k"]
        streams = [f"a:{i},name:{r.name}" for i, r in enumerate(rungs)]
    if opts.threads:
        cmd += ["-threads", str(opts.threads)]
    cmd += [
        "-f",
        "hls",
        "-hls_time",
        str(opts.segment_seconds),
        "-hls_playlist_type",
        "event",
        "-hls_segment_type",
        "fmp4",
        "-hls_flags",
        "independent_segments+temp_file",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "-hls_segment_filename",
        str(out_dir / "%v" / "seg_%05d.m4s"),
        "-master_pl_name",
        "master.m3u8",
        "-var_stream_map",
        " ".join(streams),
        str(out_dir / "%v" / "index.m3u8"),
    ]
    if poster is not None and video_rungs:
        cmd += ["-map", "[poster]", "-frames:v", "1", "-q:v", "4", str(poster)]
    return cmd


_PR_SET_PDEATHSIG = 1
# Loaded up front: the child runs the preexec hook between fork and exec, where loading a
# library could deadlock on a lock another thread held at fork time.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # A worker killed with SIGKILL cannot stop its ffmpeg; the kernel does it for us (Linux).
    with contextlib.suppress(OSError, AttributeError):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class FfmpegError(RuntimeError):
    """ffmpeg exited with an error; the message carries its last lines."""


async def run(
    cmd: list[str],
    *,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Run ffmpeg, reporting ``-progress`` blocks; kill it if the caller is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    progress = Progress()
    try:
        async for raw in proc.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.isdigit():
                progress.out_time_seconds = int(value) / 1e6
            elif key == "fps":
                with contextlib.suppress(ValueError):
                    progress.fps = float(value)
            elif key == "speed" and value.endswith("x"):
                with contextlib.suppress(ValueError):
                    progress.speed = float(value[:-1])
            elif key == "progress":
                progress.done = value == "end"
                if on_progress is not None:
                    await on_progress(progress)
        code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr_task.cancel()
        raise
    err = (await stderr_task).decode(errors="replace").strip()
    if code != 0:
        tail = " | ".join(err.splitlines()[-3:]) or f"exit code {code}"
        raise FfmpegError(f"ffmpeg failed: {tail}")
