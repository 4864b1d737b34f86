"""The transcode use case: probe, one ffmpeg run published as it goes, measure, commit.

The source's loudness is measured by an audio-only ffmpeg run alongside the ladder's
(``metadata.py``); its result and the probe are stored beside the ladder before the master.

Each run writes under its own prefix ``videos/{id}/hls/{run}/``, so a redelivered job never
mixes its objects with an earlier run's and an edge never caches two runs' bytes under one
name. A run holds the video's lease (one writer at a time), first removes what dead runs left,
and removes its own objects when it fails or hands the job back. The row turns ready in the
same transaction that replaces the renditions; the measured master playlist is stored just
before that, so a ready video always has its final playlists.

A run of a ready video (a re-transcode) is not exposed as it goes: the ready run keeps serving
until the new one is complete, then one transaction switches the row to it and schedules the
old run's deletion once ``TRANSCODER_OLD_RUN_GRACE_SECONDS`` have passed (a purge job in the
outbox). Such a run that fails leaves the ready run serving, with the reason as the video's
error.

The source is checked again before any work (the limits may have been lowered since it was
uploaded), and ffmpeg runs within a time budget that grows with the source's duration. A
failure leaves the worker as a ``Failure``: a reason fit for the public ``error`` of the video,
and whether trying again could help.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.transcoder import ffmpeg, metadata, previews, trickplay
from services.transcoder.ladder import Rung, plan_ladder
from services.transcoder.lease import Lease
from services.transcoder.package import (
    content_type,
    iframes_playlist,
    init_segment,
    master_playlist,
    measure_variant,
    variant_codecs,
    vod_playlist,
)
from services.transcoder.publish import MASTER, LivePublisher
from services.transcoder.settings import Settings
from shared.core.errors import NotFound, NotMedia
from shared.core.tasks import cancel_and_wait
from shared.db.models import VideoState
from shared.db.repositories import VideoRepository
from shared.media.ffprobe import MediaInfo, probe
from shared.media.hls import media_durations
from shared.media.limits import MediaLimits
from shared.mq.messages import PurgeJob, TranscodeJob, VideoEvent
from shared.mq.outbox import add_job, relay_pending, scheduled_purges
from shared.runtime.resources import Resources
from shared.storage.local import media_location
from shared.videos import progress
from shared.videos.webhooks import enqueue_event

log = logging.getLogger(__name__)


class IncompleteOutput(RuntimeError):
    """ffmpeg ended without error but wrote less media than the source declares."""


class VideoDeleted(RuntimeError):
    """The video was deleted while its transcode ran: stop and take back what the run wrote."""


@dataclass(frozen=True)
class Failure:
    reason: str  # public: the video's error, its failed event and the dead letter's header
    permanent: bool  # the same source would fail the same way: retrying only costs


INTERNAL_ERROR = "transcoding failed: an internal error"


def failure_of(exc: BaseException) -> Failure:
    """What a job's exception means for the video and for its retries."""
    if isinstance(exc, NotMedia):
        return Failure(exc.detail, permanent=True)
    if isinstance(exc, ffmpeg.FfmpegTimeout):
        return Failure(exc.public_reason, permanent=True)
    if isinstance(exc, ffmpeg.FfmpegError):
        # A corrupt source fails the same way each time, but so does a full disk until it is
        # not: ffmpeg's exit code cannot tell them apart.
        return Failure(exc.public_reason, permanent=False)
    if isinstance(exc, IncompleteOutput):
        return Failure(str(exc), permanent=False)
    if isinstance(exc, TimeoutError):
        return Failure("job timed out", permanent=False)
    return Failure(INTERNAL_ERROR, permanent=False)


async def check_still_wanted(res: Resources, video_id: uuid.UUID) -> None:
    """Raise VideoDeleted once the video's row is gone or marked deleted."""
    async with res.need_db().session() as session:
        video = await VideoRepository(session).find(video_id)
    if video is None or video.state == VideoState.deleted.value:
        raise VideoDeleted(f"video {video_id} was deleted")


async def _was_deleted(res: Resources, video_id: uuid.UUID) -> bool:
    """Whether the video is gone; False when that cannot be told (the run's own error stands)."""
    try:
        await check_still_wanted(res, video_id)
    except VideoDeleted:
        return True
    except Exception:
        return False
    return False


def hls_root(video_id: uuid.UUID) -> str:
    """Every run's outputs of a video live under this prefix."""
    return f"videos/{video_id}/hls/"


def run_prefix(video_id: uuid.UUID, run_id: str) -> str:
    """The outputs of one run."""
    return f"{hls_root(video_id)}{run_id}/"


@dataclass
class Outcome:
    skipped: bool
    media_seconds: float = 0.0
    wall_seconds: float = 0.0


async def job_timeout_seconds(res: Resources, settings: Settings, job: TranscodeJob) -> float:
    """The job's time limit: ffmpeg's budget for the video's duration plus the overhead.

    Never above ``TRANSCODER_JOB_TIMEOUT_SECONDS``, which is also the limit of a video whose
    duration is not known.
    """
    async with res.need_db().session() as session:
        video = await VideoRepository(session).find(job.video_id)
    cap = settings.transcoder_job_timeout_seconds
    if video is None or video.duration_seconds is None:
        return cap
    budget = ffmpeg.time_budget_seconds(
        video.duration_seconds,
        base_seconds=settings.transcoder_encode_timeout_base_seconds,
        factor=settings.transcoder_encode_timeout_factor,
        cap_seconds=cap,
    )
    return min(cap, budget + settings.transcoder_job_overhead_seconds)


def serving_prefix(master_key: str) -> str:
    """The objects of the run a master playlist belongs to (the whole ladder folder for a
    ladder stored before runs had folders)."""
    return master_key.rsplit("/", 1)[0] + "/"


@dataclass(frozen=True)
class Start:
    """A run that goes ahead. ``serving``: the prefix of the ready run that keeps serving
    until this one is complete (a re-transcode); None when the run is exposed as it goes."""

    serving: str | None = None


async def start_job(res: Resources, job: TranscodeJob) -> Start | None:
    """Mark the video transcoding (a re-transcoded video stays ready); None when there is
    nothing to do (ready, deleted, gone)."""
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        video = await repo.find(job.video_id)
        if video is None or video.state == VideoState.deleted.value:
            return None
        if video.state == VideoState.ready.value:
            if not job.retranscode or not video.master_key:
                return None
            return Start(serving=serving_prefix(video.master_key))
        if video.state != VideoState.transcoding.value:
            await repo.transition(video, VideoState.transcoding)
        # Whatever an earlier run exposed is about to be deleted.
        await repo.set_fields(job.video_id, error=None, master_key=None, poster_key=None)
    return Start()


async def _remove_dead_runs(res: Resources, video_id: uuid.UUID, start: Start) -> None:
    """Delete what earlier runs left, but the serving run and replaced runs still in their
    grace (their purge jobs delete them when it ends)."""
    store = res.need_store()
    root = hls_root(video_id)
    if start.serving is None:
        await store.delete_prefix(root)
        return
    async with res.need_db().session() as session:
        kept = await scheduled_purges(session, video_id) | {start.serving}
    for info in await store.list(root):
        if not info.key.startswith(tuple(kept)):
            await store.delete(info.key)


async def transcode(res: Resources, settings: Settings, job: TranscodeJob) -> Outcome:
    """Run the job; idempotent for redelivered and duplicated messages."""
    run_id = uuid.uuid4().hex[:12]
    lease = Lease(res.need_redis(), job.video_id, run_id, settings.transcoder_lease_seconds)
    await lease.acquire()
    async with lease.kept():
        start = await start_job(res, job)
        if start is None:
            log.info("job %s: video %s needs no transcode; skipping", job.job_id, job.video_id)
            return Outcome(skipped=True)
        await _remove_dead_runs(res, job.video_id, start)
        prefix = run_prefix(job.video_id, run_id)
        try:
            return await _run(res, settings, job, prefix, start)
        except Exception as exc:
            await _abandon(res, job.video_id, prefix)
            # Deleting a video pulls its objects from under the run, which can fail it another
            # way before the progress check notices (a segment written into a folder being
            # removed): a run whose video is gone stopped because of that, with nothing to retry.
            if isinstance(exc, VideoDeleted) or await _was_deleted(res, job.video_id):
                log.info(
                    "job %s: video %s was deleted mid-transcode; stopped and removed the run",
                    job.job_id,
                    job.video_id,
                )
                return Outcome(skipped=True)
            raise
        except BaseException:
            await _abandon(res, job.video_id, prefix)
            raise


async def _run(
    res: Resources, settings: Settings, job: TranscodeJob, prefix: str, start: Start
) -> Outcome:
    store = res.need_store()
    started = time.monotonic()
    work_root = settings.transcoder_work_dir
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"vsp-{job.video_id}-", dir=work_root))
    try:
        async with media_location(store, job.source_key) as source:
            info = await probe(source, label=f"video {job.video_id}")
            limits = MediaLimits.from_settings(settings)
            limits.check(info)
            rungs = plan_ladder(info)
            if settings.transcoder_max_rungs:
                rungs = rungs[: settings.transcoder_max_rungs]
            log.info(
                "job %s: %.1f s source, ladder %s",
                job.job_id,
                info.duration_seconds,
                ", ".join(r.name for r in rungs),
            )
            out = work / "hls"
            out.mkdir()
            poster = work / "poster.jpg" if info.has_video else None
            opts = ffmpeg.EncodeOptions(
                segment_seconds=settings.transcoder_segment_seconds,
                gop_seconds=settings.transcoder_gop_seconds,
                preset=settings.transcoder_preset,
                threads=settings.transcoder_threads,
                # Decoders count padded buffers; twice the limit leaves room for them.
                max_decode_pixels=2 * limits.max_frame_pixels,
            )
            publisher = LivePublisher(
                store, out, prefix, rungs, info, lambda: _expose(res, job.video_id, prefix, start)
            )
            sprites = previews.plan_for(info.duration_seconds, rungs)
            command = ffmpeg.build_command(
                source, out, info, rungs, opts, poster=poster, sprites=sprites, sprite_dir=work
            )
            budget = ffmpeg.time_budget_seconds(
                info.duration_seconds,
                base_seconds=settings.transcoder_encode_timeout_base_seconds,
                factor=settings.transcoder_encode_timeout_factor,
                cap_seconds=settings.transcoder_job_timeout_seconds,
            )
            measuring = asyncio.create_task(metadata.measure_loudness(source, info, opts, budget))
            try:
                await _encode_and_publish(
                    command,
                    publisher,
                    settings.transcoder_publish_interval_seconds,
                    _progress_reporter(res, job, info),
                    budget,
                )
                loudness = await measuring
            finally:
                await cancel_and_wait(measuring)
        _check_complete(out, rungs, info)
        await publisher.sync()
        renditions = await _finish(res, out, prefix, rungs, info, poster, loudness, sprites)
        poster_key = prefix + "poster.jpg" if poster and poster.exists() else None
        await _switch(res, settings, job, prefix, renditions, poster_key)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    wall = time.monotonic() - started
    await progress.publish(res.need_redis(), job.video_id, stage="ready", percent=100.0)
    await _event(
        res,
        "video.ready",
        job.video_id,
        VideoState.ready,
        master_key=prefix + MASTER,
        wall_seconds=wall,
    )
    return Outcome(False, info.duration_seconds, wall)


async def _encode_and_publish(
    command: list[str],
    publisher: LivePublisher,
    interval_seconds: float,
    report: ffmpeg.ProgressCallback,
    budget_seconds: float,
) -> None:
    """Run ffmpeg while the publisher mirrors its output; either failing stops both."""
    encode = asyncio.create_task(
        ffmpeg.run(command, on_progress=report, timeout_seconds=budget_seconds)
    )
    mirror = asyncio.create_task(publisher.run(interval_seconds))
    try:
        done, _ = await asyncio.wait({encode, mirror}, return_when=asyncio.FIRST_COMPLETED)
        if mirror in done:
            mirror.result()  # raises why publishing stopped
        await encode
    finally:
        await cancel_and_wait(encode, mirror)


def _progress_reporter(
    res: Resources, job: TranscodeJob, info: MediaInfo
) -> ffmpeg.ProgressCallback:
    last_sent = 0.0

    async def report(p: ffmpeg.Progress) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent < 1 and not p.done:
            return
        last_sent = now
        # A deleted video's transcode stops here, within a second, instead of running on.
        await check_still_wanted(res, job.video_id)
        percent = p.percent(info.duration_seconds)
        await progress.publish(
            res.need_redis(),
            job.video_id,
            stage="transcoding",
            percent=percent,
            fps=p.fps,
            speed=p.speed,
        )
        await _event(
            res,
            "video.progress",
            job.video_id,
            VideoState.transcoding,
            percent=percent,
            fps=p.fps,
            speed=p.speed,
        )

    return report


def _check_complete(out: Path, rungs: list[Rung], info: MediaInfo) -> None:
    """Refuse a ladder shorter than the source: ffmpeg stops quietly at a truncated input."""
    slack = max(1.0, 0.05 * info.duration_seconds)
    for rung in rungs:
        playlist = out / rung.name / "index.m3u8"
        written = sum(media_durations(playlist.read_text())) if playlist.exists() else 0.0
        if written < info.duration_seconds - slack:
            raise IncompleteOutput(
                f"the source is truncated or corrupt: decoded {written:.1f} s "
                f"of {info.duration_seconds:.1f} s"
            )


async def _finish(
    res: Resources,
    out: Path,
    prefix: str,
    rungs: list[Rung],
    info: MediaInfo,
    poster: Path | None,
    loudness: metadata.Loudness,
    sprites: previews.SpritePlan | None = None,
) -> list[dict[str, object]]:
    """Store the VOD playlists, the I-frame playlists, the poster and previews, the source's
    descriptions and the measured master; the renditions' rows."""
    store = res.need_store()
    stats = []
    iframes: dict[str, trickplay.IFrameStats] = {}
    keyframes = await trickplay.ladder_iframes(out, [r.name for r in rungs if r.kind == "video"])
    for rung in rungs:
        codecs = variant_codecs(rung, init_segment(out / rung.name), info.has_audio)
        stats.append(measure_variant(out, rung, codecs))
        final = vod_playlist((out / rung.name / "index.m3u8").read_text())
        await store.put_bytes(
            f"{prefix}{rung.name}/index.m3u8", final.encode(), content_type("index.m3u8")
        )
        if rung.name in keyframes:
            trick = keyframes[rung.name]
            # The ranges' file first, then the playlist that names it.
            media = f"{prefix}{rung.name}/{trick.file.name}"
            await store.put_file(media, trick.file, content_type(trick.file.name))
            key = prefix + iframes_playlist(rung)
            await store.put_bytes(key, trick.playlist.encode(), content_type(key))
            iframes[rung.name] = trick.stats
    if poster is not None and poster.exists():
        await store.put_file(prefix + "poster.jpg", poster, content_type(poster.name))
    if sprites is not None:
        # ffmpeg wrote the tiles into the work folder, beside the ladder's folder.
        await _store_previews(res, out.parent, prefix, sprites)
    for name, body in metadata.documents(info, loudness).items():
        await store.put_bytes(prefix + name, body, content_type(name))
    await store.put_bytes(
        prefix + MASTER, master_playlist(stats, info, iframes).encode(), content_type(MASTER)
    )
    return [
        {
            "name": s.rung.name,
            "kind": s.rung.kind,
            "width": s.rung.width,
            "height": s.rung.height,
            "bandwidth": s.peak_bps,
            "average_bandwidth": s.average_bps,
            "codecs": s.codecs,
            "frame_rate": info.frame_rate if s.rung.kind == "video" else None,
            "playlist_key": prefix + s.playlist,
        }
        for s in stats
    ]


async def _switch(
    res: Resources,
    settings: Settings,
    job: TranscodeJob,
    prefix: str,
    renditions: list[dict[str, object]],
    poster_key: str | None,
) -> None:
    """Point the row at the finished run, in one transaction with its renditions.

    A run that replaces a ready one schedules, in the same transaction, the replaced run's
    deletion once ``TRANSCODER_OLD_RUN_GRACE_SECONDS`` have passed: viewers hold signed
    playlists of it until then. The purge job is an outbox row, so a worker dying now loses
    nothing: any relay publishes it.
    """
    purge: PurgeJob | None = None
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        try:
            video = await repo.get(job.video_id, for_update=True)
        except NotFound as exc:
            raise VideoDeleted(str(exc)) from exc
        replaced = video.master_key if video.state == VideoState.ready.value else None
        await repo.replace_renditions(job.video_id, renditions)
        video.master_key = prefix + MASTER
        # A poster its owner uploaded (outside the runs' folder) outlives a new run.
        if not video.poster_key or video.poster_key.startswith(hls_root(job.video_id)):
            video.poster_key = poster_key
        if replaced is None:
            await repo.transition(video, VideoState.ready)
            await enqueue_event(session, video, "video.ready")
        else:
            video.error = None
            video.ready_at = datetime.now(UTC)
            purge = PurgeJob(
                job_id=uuid.uuid4(),
                video_id=job.video_id,
                prefix=serving_prefix(replaced),
                not_before=time.time() + settings.transcoder_old_run_grace_seconds,
            )
            add_job(session, purge)
    if purge is not None:
        log.info(
            "video %s switched to %s; %s is deleted in %.0f s",
            job.video_id,
            prefix,
            purge.prefix,
            settings.transcoder_old_run_grace_seconds,
        )
        try:
            await relay_pending(res.need_db(), res.need_broker(), job_ids=[purge.job_id])
        except Exception as exc:
            log.warning("purge job %s stays in the outbox for a relay: %s", purge.job_id, exc)


async def purge_run(res: Resources, job: PurgeJob) -> bool:
    """Delete a replaced run's objects and have the edges drop their copies; never the run
    the video serves. False when the video is gone (its own purge deletes everything)."""
    assert job.prefix is not None
    if not job.prefix.startswith(hls_root(job.video_id)):
        raise ValueError(f"purge job {job.job_id}: {job.prefix} is not a run of its video")
    async with res.need_db().session() as session:
        video = await VideoRepository(session).find(job.video_id)
    if video is None or video.state == VideoState.deleted.value:
        return False
    store = res.need_store()
    serving = serving_prefix(video.master_key) if video.master_key else None
    if serving is not None and serving.startswith(job.prefix):
        # A ladder stored before runs had folders holds the serving run in its folder.
        for info in await store.list(job.prefix):
            if not info.key.startswith(serving):
                await store.delete(info.key)
    elif serving != job.prefix:
        await store.delete_prefix(job.prefix)
    # Edges drop every copy of the video (the event's scope); they fetch the serving run again.
    purged = VideoEvent(
        type="video.deleted", video_id=job.video_id, state=video.state, data={"prefix": job.prefix}
    )
    await res.need_broker().publish_event(purged)
    return True


async def _store_previews(
    res: Resources, folder: Path, prefix: str, sprites: previews.SpritePlan
) -> None:
    """Lay the encode's tiles out in sprite sheets, store them, then the thumbnails track that
    points at them."""
    sheets = await previews.make_sheets(folder, sprites)
    if not sheets:
        log.warning("no preview sheets were written in %s; the video has no previews", folder)
        return
    store = res.need_store()
    for sheet in sheets:
        await store.put_file(prefix + sheet.name, sheet, content_type(sheet.name))
    vtt = previews.thumbnails_vtt(sprites).encode()
    await store.put_bytes(prefix + previews.THUMBNAILS, vtt, content_type(previews.THUMBNAILS))


async def _expose(res: Resources, video_id: uuid.UUID, prefix: str, start: Start) -> None:
    """Point the row at the live master so the video can be watched while it transcodes; a
    re-transcoded video keeps serving its ready run instead."""
    if start.serving is not None:
        return
    async with res.need_db().session() as session:
        await VideoRepository(session).set_fields(video_id, master_key=prefix + MASTER)
    await progress.publish(res.need_redis(), video_id, stage="transcoding", playable=True)


async def _abandon(res: Resources, video_id: uuid.UUID, prefix: str) -> None:
    """Withdraw a failed or handed-back run: unexpose it and delete its objects."""
    try:
        async with res.need_db().session() as session:
            repo = VideoRepository(session)
            video = await repo.find(video_id)
            if video is not None and video.master_key and video.master_key.startswith(prefix):
                await repo.set_fields(video_id, master_key=None, poster_key=None)
        await res.need_store().delete_prefix(prefix)
    except Exception:
        # The next run (or fail_video) removes the prefix anyway; never hide the first error.
        log.exception("could not clean up %s", prefix)


async def _event(
    res: Resources,
    kind: str,
    video_id: uuid.UUID,
    state: VideoState,
    *,
    master_key: str | None = None,
    **data: object,
) -> None:
    event = VideoEvent(
        type=kind,  # type: ignore[arg-type]
        video_id=video_id,
        state=state.value,
        master_key=master_key,
        data=data,
    )
    try:
        await res.need_broker().publish_event(event)
    except Exception:
        log.warning("could not publish %s for %s", kind, video_id)


async def fail_video(
    res: Resources, video_id: uuid.UUID, reason: str, *, retranscode: bool = False
) -> None:
    """Mark the video failed with ``reason`` and remove any partial outputs; a failed
    re-transcode leaves the ready run serving, with ``reason`` as the video's error."""
    serving: str | None = None
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        try:
            video = await repo.get(video_id, for_update=True)
        except NotFound:
            return
        if video.state == VideoState.ready.value:
            if not retranscode or not video.master_key:
                return
            video.error = f"re-transcode failed: {reason}"
            serving = serving_prefix(video.master_key)
        else:
            newly_failed = video.state != VideoState.failed.value
            video.state = VideoState.failed.value
            video.error = reason
            video.master_key = None
            video.poster_key = None
            await repo.replace_renditions(video_id, [])
            if newly_failed:  # a job delivered again fails an already failed video once more
                await enqueue_event(session, video, "video.failed")
    if serving is not None:
        # What runs whose workers died left (this run removed its own objects already).
        await _remove_dead_runs(res, video_id, Start(serving=serving))
        return
    await res.need_store().delete_prefix(hls_root(video_id))
    await progress.publish(res.need_redis(), video_id, stage="failed", error=reason)
    await _event(res, "video.failed", video_id, VideoState.failed, reason=reason)


async def requeue_video(res: Resources, video_id: uuid.UUID) -> None:
    """Put a video whose job was handed back into the queued state again."""
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        video = await repo.find(video_id)
        if video is not None and video.state == VideoState.transcoding.value:
            await repo.transition(video, VideoState.queued)
            await repo.set_fields(video_id, master_key=None, poster_key=None)
