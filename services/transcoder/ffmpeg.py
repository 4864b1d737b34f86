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
    video_rungs = [r for r in rungs if r.kind == "video"]
    if not video_rungs:
        poster = None  # an audio-only source has no frame to take
    cmd = [*_global_args(), *_progress_args(), "-i", source]
    if video_rungs:
        cmd += _video_ladder_args(info, video_rungs, opts, poster=poster is not None)
    else:
        cmd += _audio_ladder_args(rungs)
    if opts.threads:
        cmd += ["-threads", str(opts.threads)]
    cmd += _hls_args(out_dir, opts, _var_stream_map(rungs, video_rungs, info.has_audio))
    if poster is not None:
        cmd += ["-map", "[poster]", "-frames:v", "1", "-q:v", "4", str(poster)]
    return cmd


def _global_args() -> list[str]:
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


def _progress_args() -> list[str]:
    # Key=value blocks on stdout once a second; run() turns them into Progress reports.
    return ["-progress", "pipe:1", "-stats_period", "1"]


def _video_ladder_args(
    info: MediaInfo, video_rungs: list[Rung], opts: EncodeOptions, *, poster: bool
) -> list[str]:
    """Filter graph, stream maps and encoder settings for a ladder of video rungs."""
    cmd = ["-filter_complex", _filter_graph(info, video_rungs, poster=poster)]
    for i in range(len(video_rungs)):
        cmd += ["-map", f"[v{i}]"]
    if info.has_audio:
        # One copy of the audio per variant, so every variant playlist carries sound.
        cmd += ["-map", "0:a:0"] * len(video_rungs)
    cmd += _h264_args(info, opts)
    cmd += _rung_rate_args(video_rungs)
    if info.has_audio:
        cmd += ["-c:a", "aac", "-b:a", f"{video_rungs[0].audio_kbps}k", *_AAC_LAYOUT]
    return cmd


def _filter_graph(info: MediaInfo, video_rungs: list[Rung], *, poster: bool) -> str:
    """Split the decoded video once per rung (plus the poster) and scale each branch."""
    n = len(video_rungs)
    branches = n + (1 if poster else 0)
    labels = "".join(f"[s{i}]" for i in range(branches))
    chains = [f"[0:v:0]split={branches}{labels}"] if branches > 1 else []
    for i, rung in enumerate(video_rungs):
        src = f"[s{i}]" if branches > 1 else "[0:v:0]"
        chains.append(
            f"{src}scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,format=yuv420p[v{i}]"
        )
    if poster:
        chains.append(
            f"[s{n}]select='gte(t\\,{poster_seconds(info)})',"
            "scale='min(640,iw)':-2,setsar=1[poster]"
        )
    return ";".join(chains)


def _h264_args(info: MediaInfo, opts: EncodeOptions) -> list[str]:
    # A fixed GOP with scene-cut keyframes off puts an IDR at every segment boundary of
    # every rung, so players can switch rungs at any segment.
    gop_frames = max(1, round((info.frame_rate or 30) * opts.gop_seconds))
    return [
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


def _rung_rate_args(video_rungs: list[Rung]) -> list[str]:
    cmd: list[str] = []
    for i, rung in enumerate(video_rungs):
        cmd += [
            f"-b:v:{i}",
            f"{rung.video_kbps}k",
            f"-maxrate:v:{i}",
            f"{rung.maxrate_kbps}k",
            f"-bufsize:v:{i}",
            f"{rung.bufsize_kbps}k",
        ]
    return cmd


_AAC_LAYOUT = ("-ac", "2", "-ar", "48000")


def _audio_ladder_args(rungs: list[Rung]) -> list[str]:
    """Stream maps and AAC settings for an audio-only ladder."""
    cmd = ["-map", "0:a:0"] * len(rungs)
    cmd += ["-c:a", "aac", *_AAC_LAYOUT]
    for i, rung in enumerate(rungs):
        cmd += [f"-b:a:{i}", f"{rung.audio_kbps}k"]
    return cmd


def _var_stream_map(rungs: list[Rung], video_rungs: list[Rung], has_audio: bool) -> str:
    if not video_rungs:
        return " ".join(f"a:{i},name:{r.name}" for i, r in enumerate(rungs))
    return " ".join(
        f"v:{i},a:{i},name:{r.name}" if has_audio else f"v:{i},name:{r.name}"
        for i, r in enumerate(video_rungs)
    )


def _hls_args(out_dir: Path, opts: EncodeOptions, var_stream_map: str) -> list[str]:
    """The HLS muxer: fMP4 segments, EVENT playlists, one directory per variant."""
    return [
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
        var_stream_map,
        str(out_dir / "%v" / "index.m3u8"),
    ]


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
