"""A strict HLS check of a stored ladder, independent of the code that wrote it.

It downloads every object of a ladder into a folder and checks, with its own parsing and
ffprobe/ffmpeg, what players and validators care about: tags, segment durations, keyframe
alignment across rungs, that each segment decodes on its own, and that the declared
BANDWIDTH / AVERAGE-BANDWIDTH match the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage

from shared.db.models import TranscodeJobRow as JobRow
from shared.db.models import Video, VideoState
from shared.db.repositories import JobRepository, VideoRepository
from shared.media.samples import synthetic_clip
from shared.mq.broker import Broker
from shared.mq.messages import TranscodeJob
from shared.mq.outbox import add_job
from shared.mq.topology import Topology
from shared.runtime.resources import Resources
from shared.storage import ObjectStore
from tests.support import Proc, Processes, delete_topology

T = TypeVar("T")
_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(line: str) -> dict[str, str]:
    """The attribute list of a tag line, quotes removed."""
    return {k: v.strip('"') for k, v in _ATTR.findall(line.split(":", 1)[1])}


@dataclass
class Variant:
    uri: str
    attrs: dict[str, str]
    text: str = ""
    target: int = 0
    durations: list[float] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    init: str | None = None

    @property
    def folder(self) -> str:
        return self.uri.rsplit("/", 1)[0]


@dataclass
class Ladder:
    root: Path
    master: str
    variants: list[Variant]


async def download_ladder(store: ObjectStore, prefix: str, into: Path) -> Path:
    """Copy every object under ``prefix`` into ``into``; returns the folder."""
    for info in await store.list(prefix):
        path = into / info.key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        await store.download_file(info.key, path)
    return into


def parse_ladder(root: Path) -> Ladder:
    """Read the master playlist and every variant playlist under ``root``."""
    master = (root / "master.m3u8").read_text()
    variants: list[Variant] = []
    lines = master.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            variants.append(Variant(lines[i + 1].strip(), attributes(line)))
    for v in variants:
        v.text = (root / v.uri).read_text()
        for line in v.text.splitlines():
            if line.startswith("#EXT-X-TARGETDURATION:"):
                v.target = int(line.split(":", 1)[1])
            elif line.startswith("#EXTINF:"):
                v.durations.append(float(line[8:].split(",", 1)[0]))
            elif line.startswith("#EXT-X-MAP:"):
                v.init = attributes(line)["URI"]
            elif line and not line.startswith("#"):
                v.segments.append(line.strip())
    return Ladder(root, master, variants)


def check_tags(ladder: Ladder, *, video: bool) -> None:
    """Master and media playlist tags a strict validator requires."""
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in ladder.master
    assert ladder.variants, "master lists no variants"
    for v in ladder.variants:
        for name in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS"):
            assert name in v.attrs, f"{v.uri}: no {name}"
        if video:
            assert re.fullmatch(r"\d+x\d+", v.attrs["RESOLUTION"]), v.attrs
            assert float(v.attrs["FRAME-RATE"]) > 0
            assert v.attrs["CODECS"].startswith("avc1.")
        else:
            assert v.attrs["CODECS"] == "mp4a.40.2"
        assert v.init, f"{v.uri}: no EXT-X-MAP"
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in v.text and v.text.rstrip().endswith("#EXT-X-ENDLIST")
        assert v.segments and len(v.segments) == len(v.durations)
        for d in v.durations:
            assert v.target >= round(d), f"{v.uri}: EXTINF {d} above target {v.target}"


def measured_rates(ladder: Ladder, v: Variant) -> tuple[float, float]:
    """(peak, average) bit rate of a variant, by the RFC 8216 definitions."""
    sizes = [(ladder.root / v.folder / s).stat().st_size for s in v.segments]
    peak = 0.0
    for start in range(len(sizes)):
        total, seconds = 0, 0.0
        for end in range(start, len(sizes)):
            total += sizes[end]
            seconds += v.durations[end]
            if 0.5 * v.target <= seconds <= 1.5 * v.target:
                peak = max(peak, total * 8 / seconds)
    average = sum(sizes) * 8 / sum(v.durations)
    return peak or average, average


def check_bandwidth(ladder: Ladder, tolerance: float = 0.10) -> None:
    """Declared BANDWIDTH and AVERAGE-BANDWIDTH within ``tolerance`` of the measured rates."""
    for v in ladder.variants:
        peak, average = measured_rates(ladder, v)
        declared_peak = int(v.attrs["BANDWIDTH"])
        declared_avg = int(v.attrs["AVERAGE-BANDWIDTH"])
        assert math.isclose(declared_peak, peak, rel_tol=tolerance), (v.uri, declared_peak, peak)
        assert math.isclose(declared_avg, average, rel_tol=tolerance), (
            v.uri,
            declared_avg,
            average,
        )


def video_packets(path: Path) -> list[tuple[float, bool]]:
    """(pts seconds, keyframe) of every video packet ffprobe reads from ``path``."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    packets = json.loads(out.stdout)["packets"]
    return [(float(p["pts_time"]), "K" in p["flags"]) for p in packets]


def keyframe_times(ladder: Ladder, v: Variant) -> list[float]:
    """Presentation times of the keyframes of a variant, read through its playlist."""
    return sorted(t for t, key in video_packets(ladder.root / v.uri) if key)


def check_segments_decode(ladder: Ladder, v: Variant, *, video: bool) -> None:
    """Every segment decodes on its own (init + segment), starting on a keyframe."""
    assert v.init is not None
    init = (ladder.root / v.folder / v.init).read_bytes()
    for name in v.segments:
        single = ladder.root / f"single-{uuid.uuid4().hex}.mp4"
        single.write_bytes(init + (ladder.root / v.folder / name).read_bytes())
        try:
            decoded = subprocess.run(
                ["ffmpeg", "-v", "error", "-i", str(single), "-map", "0", "-f", "null", "-"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert decoded.returncode == 0 and not decoded.stderr.strip(), (name, decoded.stderr)
            if video:
                packets = video_packets(single)
                assert packets and packets[0][1], f"{v.uri} {name} does not start on a keyframe"
        finally:
            single.unlink()


def decode_variant(ladder: Ladder, v: Variant) -> float:
    """Decode a whole variant through its playlist; returns the decoded media seconds."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostats",
            "-progress",
            "pipe:1",
            "-i",
            str(ladder.root / v.uri),
            "-map",
            "0",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    times = [int(x.split("=")[1]) for x in out.stdout.split() if x.startswith("out_time_us=")]
    return max(times) / 1e6 if times else 0.0


async def queued_video(res: Resources, clip: Path) -> TranscodeJob:
    """Store ``clip`` as a source and write its row, queued, without an outbox job.

    Without an outbox row no relay of another test publishes the job; the caller runs it or
    publishes it itself.
    """
    video_id = uuid.uuid4()
    key = f"videos/{video_id}/source"
    await res.need_store().put_file(key, clip)
    async with res.need_db().session() as session:
        VideoRepository(session).add(
            id=video_id, title=clip.stem, state=VideoState.queued.value, source_key=key
        )
    return TranscodeJob(job_id=uuid.uuid4(), video_id=video_id, source_key=key)


async def with_outbox_row(res: Resources, job: TranscodeJob) -> TranscodeJob:
    """Give ``job`` its outbox row, marked as already sent so that no relay publishes it."""
    async with res.need_db().session() as session:
        add_job(session, job).sent_at = datetime.now(UTC)
    return job


async def job_row(res: Resources, job: TranscodeJob, outcome: str, within: float = 15) -> JobRow:
    """The job's outbox row once a worker has recorded ``outcome`` on it.

    Workers record the outcome just after they settle the video and the message, so a test that
    has seen the video's final state polls briefly for the row to catch up.
    """

    async def check() -> JobRow | None:
        async with res.need_db().session() as session:
            row = await JobRepository(session).get(job.job_id)
        assert row is not None, f"job {job.job_id} has no row"
        return row if row.outcome == outcome else None

    return await eventually(check, within=within, what=f"job {job.job_id} to be recorded {outcome}")


async def logged(proc: Proc, text: str, within: float = 15) -> str:
    """The process's log once it holds ``text``: a line logged just after a state change."""

    async def check() -> str | None:
        log = proc.log()
        return log if text in log else None

    return await eventually(check, within=within, what=f"{proc.name} to log {text!r}")


async def video_row(res: Resources, video_id: uuid.UUID) -> Video:
    """The video's row with its renditions."""
    async with res.need_db().session() as session:
        return await VideoRepository(session).get(video_id)


async def run_ids(res: Resources, video_id: uuid.UUID) -> set[str]:
    """The run folders that hold objects of the video's ladder."""
    root = f"videos/{video_id}/hls/"
    return {o.key[len(root) :].split("/", 1)[0] for o in await res.need_store().list(root)}


async def runs_removed(res: Resources, video_id: uuid.UUID, within: float = 15) -> None:
    """Wait until no object of any run of the video's ladder is left.

    A worker marks a video failed first and removes the ladder's objects just after, so a test
    that has seen the failed state polls briefly for the objects to go.
    """

    async def check() -> bool:
        return not await run_ids(res, video_id)

    await eventually(check, within=within, what=f"the run objects of video {video_id} to go")


async def take_dead_letters(res: Resources, video_id: uuid.UUID) -> list[AbstractIncomingMessage]:
    """Remove and return the dead-letter messages of ``video_id``; others stay queued."""
    broker = res.need_broker()
    channel = await broker.connection.channel()
    try:
        queue = await channel.get_queue(broker.topology.dead_queue)
        ours, others = [], []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            body = json.loads(message.body)
            (ours if body.get("video_id") == str(video_id) else others).append(message)
        for message in ours:
            await message.ack()
        for message in others:
            await message.nack(requeue=True)
        return ours
    finally:
        await channel.close()


async def dead_letters(
    res: Resources, video_id: uuid.UUID, count: int = 1, within: float = 15
) -> list[AbstractIncomingMessage]:
    """Remove and return the video's dead letters once ``count`` of them have arrived.

    A worker publishes the dead letter just after it marks the video failed, so a test that has
    seen the failed state polls briefly for the message.
    """
    taken: list[AbstractIncomingMessage] = []

    async def check() -> list[AbstractIncomingMessage] | None:
        taken.extend(await take_dead_letters(res, video_id))
        return taken if len(taken) >= count else None

    return await eventually(check, within=within, what=f"{count} dead letter(s) of {video_id}")


@contextlib.asynccontextmanager
async def own_queues(
    res: Resources, procs: Processes
) -> AsyncIterator[tuple[Resources, dict[str, str]]]:
    """Resources publishing to exchanges and queues of their own, and the environment for workers.

    The session's job queue is shared: jobs that other tests left there (uploads that became
    videos, retries still under way) would reach this test's workers, take their time and move
    their counters. Workers started with the returned environment consume only what is
    published through the returned resources. At the end the workers are stopped, then the
    exchanges and queues are deleted.
    """
    shared = res.need_broker()
    topology = Topology(
        f"{shared.topology.prefix}.{uuid.uuid4().hex[:8]}", shared.topology.retry_delays_seconds
    )
    broker = Broker(shared.url, topology, heartbeat_seconds=shared.heartbeat_seconds)
    await broker.connect()
    try:
        yield dataclasses.replace(res, broker=broker), {"MQ_PREFIX": topology.prefix}
    finally:
        procs.stop_all()
        try:
            await delete_topology(broker.connection, topology)
        finally:
            await broker.close()


def truncate(source: Path, into: Path, fraction: float) -> Path:
    """The first ``fraction`` of the bytes of ``source``."""
    data = source.read_bytes()
    into.write_bytes(data[: int(len(data) * fraction)])
    return into


def faststart_clip(path: Path, *, seconds: float, size: str) -> Path:
    """A clip with its index (moov) first, so a truncated copy still probes as whole."""
    return synthetic_clip(path, seconds=seconds, size=size, faststart=True)


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Poll the async ``check`` until it returns something truthy, which is returned."""
    timeout = within
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


async def state_in(res: Resources, video_id: uuid.UUID, states: set[str], within: float) -> Video:
    """The row once the video reaches one of ``states``."""

    async def check() -> Video | None:
        video = await video_row(res, video_id)
        return video if video.state in states else None

    return await eventually(check, within=within, what=f"video {video_id} in {states}")
