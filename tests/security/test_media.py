"""Hostile media at the running upload service, and at the worker that would transcode it.

Files that make ffmpeg read something else (an HLS playlist naming URLs of our own network or
local files, a concat script, a DASH manifest) and media past the limits are refused with a
JSON 400 before a row, a job or an object is kept. On the worker, a source past the limits and
an encode past its time budget fail at once, and the video's public error names no path and
quotes no ffmpeg output.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from shared.runtime.resources import Resources
from shared.storage.s3 import S3Store
from tests.support.accounts import Account
from tests.support.infra import own_queues
from tests.support.media import ffmpeg_file, make_clip
from tests.support.processes import Processes
from tests.support.security import Leftovers, assert_nothing_kept, refused
from tests.support.transcode import dead_letters, job_row, queued_video, state_in, with_outbox_row


class Listener:
    """A TCP/HTTP server on 127.0.0.1 standing for an internal service; notes every connection.

    Connections are noted when accepted, before a byte is read, so a fetch that gives up
    half-way counts too.
    """

    def __init__(self) -> None:
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def verify_request(self, request: object, client_address: object) -> bool:
                seen.append(f"connection from {client_address}")
                return True

        self.requests = seen
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


@dataclass
class Upload:
    url: str
    res: Resources  # the session's clients, with the store this service writes to
    account: Account  # who uploads


@contextlib.asynccontextmanager
async def start_upload(
    procs: Processes,
    res: Resources,
    account: Account,
    *,
    s3_endpoint: str | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Upload]:
    """The upload service as a real process, on S3 (moto) when given its endpoint."""
    env = dict(env or {})
    store = res.need_store()
    if s3_endpoint is not None:
        s3 = {
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT": s3_endpoint,
            "S3_ACCESS_KEY": "testing",
            "S3_SECRET_KEY": "testing",
            "S3_BUCKET": f"vsp-media-{uuid.uuid4().hex[:8]}",
            "S3_REGION": "us-east-1",
        }
        env |= s3
        store = S3Store(
            endpoint=s3_endpoint,
            access_key=s3["S3_ACCESS_KEY"],
            secret_key=s3["S3_SECRET_KEY"],
            bucket=s3["S3_BUCKET"],
            region=s3["S3_REGION"],
        )
    proc = procs.service("upload", env=env)
    try:
        yield Upload(proc.url, replace(res, store=store), account)
    finally:
        if store is not res.store:
            await store.close()


@pytest.fixture(params=["fs", "s3"])
async def upload(
    request: pytest.FixtureRequest, procs: Processes, res: Resources, account: Account
) -> AsyncIterator[Upload]:
    """The upload service on each storage backend."""
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "s3" else None
    async with start_upload(procs, res, account, s3_endpoint=endpoint) as running:
        yield running


@pytest.fixture
async def fs_upload(procs: Processes, res: Resources, account: Account) -> AsyncIterator[Upload]:
    async with start_upload(procs, res, account) as running:
        yield running


async def post(upload: Upload, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(
            f"{upload.url}/api/videos",
            content=body,
            headers={**upload.account.headers, "Content-Type": "application/octet-stream"},
        )


async def assert_refused_and_nothing_kept(
    upload: Upload, body: bytes, *, mentions: str = ""
) -> dict[str, object]:
    before = await Leftovers.take(upload.res)
    answer = refused(await post(upload, body), 400, error="not_media", mentions=mentions)
    await assert_nothing_kept(upload.res, before)
    return answer


def assert_no_internals(detail: str, *paths: Path) -> None:
    """A public error quotes no server path, no URL and no ffmpeg output."""
    for text in ("/", "http", "[", "@ 0x", "Invalid data", "whitelist"):
        assert text not in detail, detail
    for path in paths:
        assert str(path) not in detail, detail


def hls_playlists(base: str) -> dict[str, str]:
    """Playlists whose every reference is a URL of ``base``: segments, keys, maps, variants."""
    return {
        "media": (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
            # ffmpeg refuses a playlist with a segment name that has no media extension.
            f"#EXTINF:2.0,\n{base}/internal/segment.ts\n"
            f"#EXTINF:2.0,\n{base}/latest/meta-data/iam/security-credentials/role.ts\n"
            "#EXT-X-ENDLIST\n"
        ),
        "master": (
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n"
            f"{base}/internal/variant.m3u8\n"
        ),
        "key and map": (
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n"
            f'#EXT-X-MAP:URI="{base}/internal/init.mp4"\n'
            f'#EXT-X-KEY:METHOD=AES-128,URI="{base}/internal/key"\n'
            f"#EXTINF:2.0,\n{base}/internal/seg.m4s\n#EXT-X-ENDLIST\n"
        ),
    }


async def test_a_playlist_naming_internal_urls_is_refused_without_a_request(
    upload: Upload, listener: Listener
) -> None:
    for name, playlist in hls_playlists(listener.url).items():
        answer = await assert_refused_and_nothing_kept(upload, playlist.encode())
        assert answer["detail"] == "the file is not a recognised media file", (name, answer)
        assert listener.requests == [], (name, listener.requests)
    dash = (
        '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT2S" minBufferTime="PT1S"><Period><AdaptationSet '
        'mimeType="video/mp4"><Representation id="1" bandwidth="1000">'
        f"<BaseURL>{listener.url}/internal/dash.mp4</BaseURL>"
        "</Representation></AdaptationSet></Period></MPD>"
    )
    await assert_refused_and_nothing_kept(upload, dash.encode())
    assert listener.requests == []
    # The listener does hear a fetch: the silence above is the service's.
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{listener.url}/check")).status_code == 200
    assert listener.requests[-1] == "GET /check"


async def test_a_playlist_naming_a_local_media_file_is_refused(
    fs_upload: Upload, media_dir: Path
) -> None:
    clip = make_clip(media_dir / "sec-local.mp4", seconds=1, size="160x120")
    for reference in (f"file://{clip}", str(clip)):
        playlist = (
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:1.0,\n{reference}\n#EXT-X-ENDLIST\n"
        )
        answer = await assert_refused_and_nothing_kept(fs_upload, playlist.encode())
        assert_no_internals(str(answer["detail"]), clip)


async def test_a_concat_script_is_refused(fs_upload: Upload, media_dir: Path) -> None:
    clip = make_clip(media_dir / "sec-concat.mp4", seconds=1, size="160x120")
    # An absolute name, and the script itself: the concat demuxer reads names relative to the
    # script's folder, so "source" opens the script again, until no file descriptor is left.
    for name in (str(clip), "source"):
        script = f"ffconcat version 1.0\nfile '{name}'\nduration 1\n"
        answer = await assert_refused_and_nothing_kept(fs_upload, script.encode())
        assert_no_internals(str(answer["detail"]), clip)


def over_the_limits(media_dir: Path) -> dict[str, tuple[Path, str]]:
    """Small files past one limit each (made in well under a second), and the words naming it."""
    x264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
    huge = ffmpeg_file(
        media_dir / "sec-8200x8200.mp4",
        *("-f", "lavfi", "-i", "color=c=black:size=8200x8200:rate=1:duration=1", *x264),
    )
    fast = ffmpeg_file(
        media_dir / "sec-240fps.mp4",
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=240:duration=0.5", *x264),
    )
    many = ffmpeg_file(
        media_dir / "sec-17-streams.mka",
        *("-f", "lavfi", "-i", "sine=duration=0.5", *["-map", "0:a"] * 17, "-c:a", "aac"),
    )
    long = make_clip(media_dir / "sec-4s.mp4", seconds=4, size="160x120", audio=False)
    return {
        "width": (huge, "the video is 8200 pixels wide; the limit is 8192"),
        "frame rate": (fast, "the video runs at 240 frames per second; the limit is 120"),
        "streams": (many, "the file has 17 streams; the limit is 16"),
        "duration": (long, "the video is 4 s long; the limit is 3 s"),
    }


async def test_media_over_the_limits_is_refused_naming_the_limit(
    procs: Processes, res: Resources, media_dir: Path, account: Account
) -> None:
    samples = over_the_limits(media_dir)
    # The duration limit is lowered for this service; the others keep their defaults.
    limits = {"MEDIA_MAX_DURATION_SECONDS": "3"}
    async with start_upload(procs, res, account, env=limits) as upload:
        for limit, (path, words) in samples.items():
            answer = await assert_refused_and_nothing_kept(upload, path.read_bytes())
            assert answer["detail"] == words, (limit, answer)


async def test_the_worker_fails_at_once_on_a_source_past_its_limits(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    clip = make_clip(media_dir / "sec-worker-25fps.mp4", seconds=2, size="160x120", rate=25)
    job = await with_outbox_row(res, await queued_video(res, clip))
    async with own_queues(res, procs) as (mq, env):
        procs.worker("push", env={**env, "MEDIA_MAX_FRAME_RATE_FPS": "24"})
        await mq.need_broker().publish_job(job)
        video = await state_in(res, job.video_id, {"failed", "ready"}, within=60)
        assert video.state == "failed"
        assert video.error == "the video runs at 25 frames per second; the limit is 24"
        dead = await dead_letters(mq, job.video_id)
        assert b'"attempt":1' in dead[0].body
        row = await job_row(res, job, "failed")
        assert row.attempts == 1


async def test_an_encode_over_its_time_budget_is_killed_and_not_retried(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    clip = make_clip(media_dir / "sec-budget-30s.mp4", seconds=30, size="640x360")
    job = await with_outbox_row(res, await queued_video(res, clip))
    budget = {
        "TRANSCODER_ENCODE_TIMEOUT_BASE_SECONDS": "0",
        "TRANSCODER_ENCODE_TIMEOUT_FACTOR": "0.1",  # 3 s for 30 s of media
        "TRANSCODER_PRESET": "slower",
        "TRANSCODER_THREADS": "1",
    }
    async with own_queues(res, procs) as (mq, env):
        worker = procs.worker("push", env={**env, **budget})
        await mq.need_broker().publish_job(job)
        video = await state_in(res, job.video_id, {"failed", "ready"}, within=60)
        assert video.state == "failed"
        assert video.error == "transcoding failed: the encoder ran past its time limit of 3 s"
        assert video.master_key is None and video.renditions == []
        dead = await dead_letters(mq, job.video_id)
        assert b'"attempt":1' in dead[0].body
        assert (await job_row(res, job, "failed")).attempts == 1
        log = worker.log()
        assert f"job {job.job_id} of video {job.video_id} failed: ffmpeg ran past" in log
        assert f"job {job.job_id} attempt" not in log
        # ffmpeg writes under a work folder named after the video: no such process is left.
        assert _processes_naming(str(job.video_id)) == []


def _processes_naming(text: str) -> list[str]:
    """Command lines of the machine's processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if text in cmdline:
                    found.append(cmdline)
    return found
