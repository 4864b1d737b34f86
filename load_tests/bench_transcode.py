"""Transcode wall time: the worker's whole job vs the same ffmpeg command run bare, and vs one
ffmpeg process per rendition.

- pipeline: ``services.transcoder.service.transcode`` end to end on the real PostgreSQL, Redis,
  RabbitMQ and a filesystem store: probe, the one ffmpeg process (ladder, poster and preview
  sprites), segments published while it runs, measuring, the I-frame playlists, the master
  playlist, the commit. Goal: at most 1.05x bare.
- bare: exactly the ffmpeg command the pipeline runs, alone, then the previews' work outside it
  (the sprite sheets from the tiles, one stream copy per rung for the I-frame playlists, the
  thumbnails track).
- ladder alone: the same command without the preview sprites, and nothing after it. Goal: the
  previews cost at most 1.10x its time.
- per-rendition: one ffmpeg per rung, all at once, each decoding the source itself (the
  design the single process replaces).

The runs alternate (bare, pipeline, per-rendition, repeated) so drift in machine load hits all
three alike. Usage::

    .venv/bin/python -m load_tests.bench_transcode --seconds 30 --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from load_tests.harness import Comparison, Report, command_line
from services.transcoder import ffmpeg, previews, service, trickplay
from services.transcoder.ladder import Rung, plan_ladder
from services.transcoder.settings import Settings
from shared.db.migrate import upgrade
from shared.db.models import VideoState
from shared.db.repositories import VideoRepository
from shared.media.ffprobe import MediaInfo, probe
from shared.mq.messages import TranscodeJob
from shared.runtime.resources import Resources, close_resources, open_resources
from tests.support.infra import delete_topology


def make_source(path: Path, seconds: int) -> Path:
    """A 1080p25 test pattern with a tone (cached between runs)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
            "-c:a", "aac", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def options(settings: Settings) -> ffmpeg.EncodeOptions:
    return ffmpeg.EncodeOptions(
        segment_seconds=settings.transcoder_segment_seconds,
        gop_seconds=settings.transcoder_gop_seconds,
        preset=settings.transcoder_preset,
        threads=settings.transcoder_threads,
    )


async def run_bare(
    source: Path, info: MediaInfo, rungs: list[Rung], settings: Settings, *, with_previews: bool
) -> float:
    """The pipeline's ffmpeg command, alone, and the previews' work after it; or the same
    command without the preview sprites and nothing after it."""
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as folder:
        work = Path(folder)
        out = work / "hls"
        out.mkdir()
        sprites = previews.plan_for(info.duration_seconds, rungs) if with_previews else None
        cmd = ffmpeg.build_command(
            str(source), out, info, rungs, options(settings), poster=work / "poster.jpg",
            sprites=sprites, sprite_dir=work,
        )  # fmt: skip
        started = time.monotonic()
        await ffmpeg.run(cmd)
        if sprites is not None:
            await previews.make_sheets(work, sprites)
            await trickplay_pass(out, rungs)
            (work / previews.THUMBNAILS).write_text(previews.thumbnails_vtt(sprites))
        return time.monotonic() - started


async def trickplay_pass(out: Path, rungs: list[Rung]) -> None:
    """The I-frame files and playlists of every video rung, as the pipeline makes them."""
    await trickplay.ladder_iframes(out, [r.name for r in rungs if r.kind == "video"])


async def run_per_rendition(
    source: Path, info: MediaInfo, rungs: list[Rung], settings: Settings
) -> float:
    """One ffmpeg per rung, concurrently, each decoding the whole source."""
    with tempfile.TemporaryDirectory(prefix="bench-split-") as folder:
        commands = []
        for rung in rungs:
            out = Path(folder) / rung.name
            out.mkdir()
            commands.append(ffmpeg.build_command(str(source), out, info, [rung], options(settings)))
        started = time.monotonic()
        await asyncio.gather(*(ffmpeg.run(cmd) for cmd in commands))
        return time.monotonic() - started


async def run_pipeline(res: Resources, source: Path, settings: Settings) -> float:
    """The worker's whole job for a fresh video row."""
    video_id = uuid.uuid4()
    key = f"videos/{video_id}/source"
    await res.need_store().put_file(key, source)
    async with res.need_db().session() as session:
        VideoRepository(session).add(
            id=video_id, title="bench", state=VideoState.queued.value, source_key=key
        )
    job = TranscodeJob(job_id=uuid.uuid4(), video_id=video_id, source_key=key)
    started = time.monotonic()
    outcome = await service.transcode(res, settings, job)
    wall = time.monotonic() - started
    if outcome.skipped:
        raise RuntimeError("the benchmark job was skipped")
    await res.need_store().delete_prefix(f"videos/{video_id}/")
    return wall


async def bench(args: argparse.Namespace) -> Report:
    root = Path(tempfile.mkdtemp(prefix="bench-transcode-"))
    settings = Settings(
        storage_backend="fs",
        storage_root=root / "objects",
        mq_prefix=f"bench{uuid.uuid4().hex[:6]}",
    )
    await asyncio.to_thread(upgrade, settings.database_url)
    source = make_source(Path(args.cache) / f"bench1080-{args.seconds}s.mp4", args.seconds)
    info = await probe(str(source))
    rungs = plan_ladder(info)
    if args.rungs:
        rungs = rungs[: args.rungs]
        # The pipeline plans its own ladder; give it the same number of rungs.
        settings = settings.model_copy(update={"transcoder_max_rungs": args.rungs})
    res = await open_resources(settings, {"db", "redis", "mq", "storage"})
    times: dict[str, list[float]] = {
        "bare": [],
        "ladder-alone": [],
        "pipeline": [],
        "per-rendition": [],
    }
    try:
        for i in range(args.repeat):
            times["bare"].append(await run_bare(source, info, rungs, settings, with_previews=True))
            times["ladder-alone"].append(
                await run_bare(source, info, rungs, settings, with_previews=False)
            )
            times["pipeline"].append(await run_pipeline(res, source, settings))
            times["per-rendition"].append(await run_per_rendition(source, info, rungs, settings))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    finally:
        broker = res.need_broker()
        await delete_topology(broker.connection, broker.topology)
        await close_resources(res)
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ladder = ", ".join(r.name for r in rungs)
    report = Report("bench_transcode", command_line())
    report.comparisons = [
        Comparison(
            f"{args.seconds} s 1080p, {len(rungs)} rungs: worker job vs bare ffmpeg",
            "s", med["pipeline"], med["bare"], "same ffmpeg command, bare",
            higher_is_better=False, goal_ratio=round(1 / 1.05, 4),
            notes="ratio = bare / pipeline; goal: overhead at most 1.05x",
        ),
        Comparison(
            f"{args.seconds} s 1080p, {len(rungs)} rungs: ladder with previews vs ladder alone",
            "s", med["bare"], med["ladder-alone"], "the ladder without previews",
            higher_is_better=False, goal_ratio=round(1 / 1.10, 4),
            notes="ratio = alone / with previews; goal: previews cost at most 1.10x time",
        ),
        Comparison(
            f"{args.seconds} s 1080p, {len(rungs)} rungs: one process vs one per rendition",
            "s", med["bare"], med["per-rendition"], "one ffmpeg per rendition, concurrent",
            higher_is_better=False,
        ),
    ]  # fmt: skip
    report.extra = {
        "seconds": args.seconds,
        "ladder": ladder,
        "preset": settings.transcoder_preset,
        "runs": times,
        "median": med,
        "overhead": med["pipeline"] / med["bare"],
        "previews_cost": med["bare"] / med["ladder-alone"],
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=30, help="source length (1080p25)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the three runs")
    parser.add_argument("--rungs", type=int, default=0, help="keep only the top N rungs")
    parser.add_argument("--cache", default="results/media", help="where the source is kept")
    report = asyncio.run(bench(parser.parse_args()))
    report.write()
    print(
        f"medians: bare {report.extra['median']['bare']:.1f} s, pipeline "
        f"{report.extra['median']['pipeline']:.1f} s (overhead {report.extra['overhead']:.3f}x), "
        f"per-rendition {report.extra['median']['per-rendition']:.1f} s, ladder alone "
        f"{report.extra['median']['ladder-alone']:.1f} s (previews "
        f"{report.extra['previews_cost']:.3f}x)"
    )


if __name__ == "__main__":
    main()
