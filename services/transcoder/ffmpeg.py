"""Build and run the one ffmpeg process that writes a whole HLS ladder.

The source is read under the same protocol and container whitelists as ffprobe's, with a
bounded number of threads per decoder, filter graph and encoder, and within a time budget that
grows with the source's duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from services.transcoder.ladder import Rung
from services.transcoder.previews import TILE_PATTERN, SpritePlan
from shared.media import tools
from shared.media.ffprobe import MediaInfo
from shared.media.inputs import input_args

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeOptions:
    segment_seconds: int = 4
    gop_seconds: int = 2
    preset: str = "veryfast"
    threads: int = 4
    # Decoders refuse larger frames: a stream may grow past what the probe saw mid-way.
    max_decode_pixels: int | None = None


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


def time_budget_seconds(
    duration_seconds: float, *, base_seconds: float, factor: float, cap_seconds: float
) -> float:
    """How long ffmpeg may run on a source: ``base + factor x duration``, at most ``cap``."""
    return min(cap_seconds, base_seconds + factor * duration_seconds)


def build_command(
    source: str,
    out_dir: Path,
    info: MediaInfo,
    rungs: list[Rung],
    opts: EncodeOptions,
    *,
    poster: Path | None = None,
    sprites: SpritePlan | None = None,
    sprite_dir: Path | None = None,
) -> list[str]:
    """ffmpeg arguments: decode once, split, scale and encode every rung, fMP4 HLS out.

    Playlists are written as EVENT playlists (segments appear as they are finished, the
    playlist is replaced atomically), and the optional poster frame and preview tiles
    (written into ``sprite_dir``, laid out in sheets afterwards by ``previews.make_sheets``)
    come out of the same decode as more branches of the split.
    """
    video_rungs = [r for r in rungs if r.kind == "video"]
    if not video_rungs:
        poster = None  # an audio-only source has no frame to take
    if not video_rungs or sprite_dir is None:
        sprites = None
    threads = ["-threads", str(opts.threads)]
    cmd = [*_global_args(opts), *_progress_args(), *_input_args(opts), "-i", source]
    if video_rungs:
        cmd += _video_ladder_args(
            info, video_rungs, opts, poster=poster is not None, sprites=sprites
        )
    else:
        cmd += _audio_ladder_args(rungs)
    cmd += threads  # for the encoders of the HLS output
    cmd += _hls_args(out_dir, opts, _var_stream_map(rungs, video_rungs, info.has_audio))
    if poster is not None:
        cmd += ["-map", "[poster]", "-frames:v", "1", "-q:v", "4", *threads, str(poster)]
    if sprites is not None and sprite_dir is not None:
        # Single tiles, not sheets: an output's first frame must come early for -progress to
        # start. Good quality, since the sheets encode them once more.
        cmd += ["-map", "[tiles]", "-frames:v", str(sprites.tiles), "-q:v", "2", *threads]
        cmd += ["-start_number", "0", "-f", "image2", str(sprite_dir / TILE_PATTERN)]
    return cmd


def loudness_command(source: str, opts: EncodeOptions) -> list[str]:
    """ffmpeg arguments that decode only the first audio stream through ``ebur128``.

    Its summary is logged at the info level when the filter closes; the per-frame lines go
    to the verbose level, so the log stays a few kilobytes long whatever the duration.
    """
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "info",
        *_input_args(opts),
        "-i",
        source,
        "-map",
        "0:a:0",
        "-af",
        "ebur128=peak=true:framelog=verbose",
        "-threads",
        str(opts.threads),
        "-f",
        "null",
        "-",
    ]


def _global_args(opts: EncodeOptions) -> list[str]:
    return [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-filter_complex_threads",
        str(opts.threads),
    ]


def _input_args(opts: EncodeOptions) -> list[str]:
    """Options of the one input: decoder threads and frame size, whitelists (before ``-i``)."""
    cmd = ["-threads", str(opts.threads)]
    if opts.max_decode_pixels:
        cmd += ["-max_pixels", str(opts.max_decode_pixels)]
    return cmd + input_args()


def _progress_args() -> list[str]:
    # Key=value blocks on stdout once a second; run() turns them into Progress reports.
    return ["-progress", "pipe:1", "-stats_period", "1"]


def _video_ladder_args(
    info: MediaInfo,
    video_rungs: list[Rung],
    opts: EncodeOptions,
    *,
    poster: bool,
    sprites: SpritePlan | None = None,
) -> list[str]:
    """Filter graph, stream maps and encoder settings for a ladder of video rungs."""
    cmd = ["-filter_complex", _filter_graph(info, video_rungs, poster=poster, sprites=sprites)]
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


def _filter_graph(
    info: MediaInfo, video_rungs: list[Rung], *, poster: bool, sprites: SpritePlan | None = None
) -> str:
    """Split the decoded video once per rung (plus the poster and the preview tiles) and
    scale each branch."""
    n = len(video_rungs)
    branches = n + (1 if poster else 0) + (1 if sprites is not None else 0)
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
    if sprites is not None:
        src = f"[s{branches - 1}]" if branches > 1 else "[0:v:0]"
        chains.append(sprites.filter(src, "tiles"))
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


class FfmpegError(RuntimeError):
    """ffmpeg exited with an error; the message carries its error output, for the log."""

    def __init__(self, returncode: int, stderr: str) -> None:
        self.how = tools.exit_words(returncode)
        super().__init__(f"ffmpeg failed ({self.how}): {stderr or 'no output'}")

    @property
    def public_reason(self) -> str:
        return f"transcoding failed: the encoder stopped ({self.how})"


class FfmpegTimeout(RuntimeError):
    """ffmpeg ran past its time budget and was killed; the message carries its error output."""

    def __init__(self, budget_seconds: float, stderr: str) -> None:
        self.budget_seconds = budget_seconds
        super().__init__(f"ffmpeg ran past its {budget_seconds:.0f} s budget: {stderr or '-'}")

    @property
    def public_reason(self) -> str:
        return (
            "transcoding failed: the encoder ran past its time limit "
            f"of {self.budget_seconds:.0f} s"
        )


async def run(
    cmd: list[str],
    *,
    on_progress: ProgressCallback | None = None,
    timeout_seconds: float | None = None,
) -> str:
    """Run ffmpeg, reporting ``-progress`` blocks; the tail of its log output.

    Its process group is killed when the caller is cancelled or ``timeout_seconds`` pass.
    """
    proc = await tools.start(cmd)
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(tools.read_tail(proc.stderr))
    progress = Progress()
    budget = asyncio.timeout(timeout_seconds)
    try:
        async with budget:
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
    except TimeoutError:
        await tools.kill(proc)
        if not budget.expired():
            stderr_task.cancel()
            raise
        assert timeout_seconds is not None
        err = (await stderr_task).decode(errors="replace").strip()
        raise FfmpegTimeout(timeout_seconds, err) from None
    except BaseException:
        await tools.kill(proc)
        stderr_task.cancel()
        raise
    err = (await stderr_task).decode(errors="replace").strip()
    if code != 0:
        raise FfmpegError(code, err)
    return err
