"""Locust users: HLS viewers on a playback clock, uploaders (streamed and tus), redirect storms."""

from __future__ import annotations

import base64
import os
import random
import time
from typing import Any
from urllib.parse import urljoin

import gevent
from locust import FastHttpUser, between, constant, events, task

from load_tests import common
from load_tests.playback import PlaybackClock, parse_master, parse_media, summarize

MAX_BUFFER_SECONDS = float(os.environ.get("VSP_MAX_BUFFER_SECONDS", "12"))
WATCH_SECONDS = float(os.environ.get("VSP_WATCH_SECONDS", "0"))  # 0: to the end

SESSIONS: list[dict[str, Any]] = []


def _player_event(name: str, value_ms: float, exception: Exception | None = None) -> None:
    events.request.fire(
        request_type="PLAYER",
        name=name,
        response_time=value_ms,
        response_length=0,
        exception=exception,
        context={},
    )


class Viewer(FastHttpUser):
    """Fetches the master, picks rungs by measured throughput and plays in real time."""

    host = common.DELIVERY_URL
    wait_time = constant(0)

    def on_start(self) -> None:
        self.videos = common.ready_videos()
        self.masters: dict[str, str] = {}

    def _get(self, path: str, name: str) -> tuple[bytes, float] | None:
        started = time.perf_counter()
        with self.client.get(path, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} for {name}")
                return None
            body = response.content or b""
        return body, time.perf_counter() - started

    @task
    def watch(self) -> None:
        video = common.zipf_choice(self.videos)
        if video not in self.masters:
            self.masters[video] = common.signed_master_path(video)
        master_path = self.masters[video]
        clock = PlaybackClock()
        clock.start(time.monotonic())
        got = self._get(master_path, "master.m3u8")
        if got is None:
            return
        rungs = parse_master(got[0].decode())
        media: dict[int, tuple[str, str | None, list[tuple[float, str]]]] = {}
        loaded_init: int | None = None
        index = 0
        errors = 0
        while True:
            choice = clock.choose(rungs)
            if choice not in media:
                url = urljoin(master_path, rungs[choice].uri)
                got = self._get(url, "variant.m3u8")
                if got is None:
                    errors += 1
                    break
                init, segments = parse_media(got[0].decode())
                media[choice] = (url, init, segments)
            url, init, segments = media[choice]
            if index >= len(segments) or (WATCH_SECONDS and clock.buffer_end >= WATCH_SECONDS):
                break
            if init and loaded_init != choice:
                if self._get(urljoin(url, init), "init.mp4") is None:
                    errors += 1
                    break
                loaded_init = choice
            duration, uri = segments[index]
            got = self._get(urljoin(url, uri), "segment.m4s")
            if got is None:
                errors += 1
                break
            body, seconds = got
            clock.segment_downloaded(time.monotonic(), duration, len(body), seconds)
            index += 1
            while clock.buffered_ahead(time.monotonic()) > MAX_BUFFER_SECONDS:
                gevent.sleep(0.25)
        now = time.monotonic()
        if clock.startup_time is not None:
            _player_event("startup", clock.startup_time * 1000)
        for ratio in clock.segment_ratios:
            _player_event("segment_time_ratio_x1000", ratio * 1000)
        if clock.stall_count:
            _player_event("stall", clock.stall_seconds * 1000)
        SESSIONS.append(clock.record(now, errors))


def viewer_summary() -> dict[str, Any]:
    """What viewers experienced over the run."""
    return summarize(SESSIONS)


@events.quitting.add_listener
def _print_viewer_summary(environment: Any, **_: Any) -> None:
    if not SESSIONS:
        return
    summary = viewer_summary()
    failures = environment.stats.total.num_failures
    summary["http_failures"] = failures
    summary["http_requests"] = environment.stats.total.num_requests
    summary["users"] = environment.runner.user_count if environment.runner else None
    path = common.write_summary("viewers", summary)
    print("\nviewer experience:")
    for key, value in summary.items():
        print(f"  {key:28} {value if not isinstance(value, float) else round(value, 4)}")
    print(f"  (written to {path})")


CLIP = b""


def _clip() -> bytes:
    global CLIP
    if not CLIP:
        path = os.environ.get("VSP_UPLOAD_FILE", "var/demo/demo.mp4")
        with open(path, "rb") as fh:
            CLIP = fh.read()
    return CLIP


class StreamUploader(FastHttpUser):
    """Streams a whole file in one request to the upload service, as VSP_API_KEY's account."""

    host = common.UPLOAD_URL
    wait_time = between(1, 3)

    @task
    def upload(self) -> None:
        self.client.put(
            "/api/videos?title=load",
            data=_clip(),
            name="PUT /api/videos",
            headers={**common.auth_headers(), "Content-Type": "application/octet-stream"},
        )


class TusUploader(FastHttpUser):
    """Creates a tus upload, sends half, pauses, asks the offset back and resumes (as
    VSP_API_KEY's account)."""

    host = common.TUS_URL
    wait_time = between(1, 3)

    @task
    def upload(self) -> None:
        data = _clip()
        meta = "filename " + base64.b64encode(b"load.mp4").decode()
        created = self.client.post(
            "",
            name="tus create",
            headers={
                **common.auth_headers(),
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(data)),
                "Upload-Metadata": meta,
            },
        )
        location = created.headers.get("Location")
        if not location:
            return
        # The server may answer with a path; a path joined to the base URL would repeat /files/.
        location = urljoin(self.host or "", location)
        half = len(data) // 2
        patch_headers = {
            **common.auth_headers(),
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
        }
        self.client.patch(
            location,
            data=data[:half],
            name="tus patch",
            headers={**patch_headers, "Upload-Offset": "0"},
        )
        gevent.sleep(random.uniform(0.2, 1.0))  # the uploader pauses, then resumes
        head = self.client.head(
            location, name="tus head", headers={**common.auth_headers(), "Tus-Resumable": "1.0.0"}
        )
        offset = int(head.headers.get("Upload-Offset", "0"))
        self.client.patch(
            location,
            data=data[offset:],
            name="tus patch",
            headers={**patch_headers, "Upload-Offset": str(offset)},
        )


class RedirectStorm(FastHttpUser):
    """Asks the redirect balancer where to fetch a playlist, as fast as it answers."""

    host = common.REDIRECT_URL
    wait_time = constant(0)

    @task
    def redirect(self) -> None:
        n = random.randint(1, 9)
        with self.client.get(
            f"/?video=http://s{n}.origin-cluster/video/{n}/x.m3u8",
            name="redirect",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code not in (301, 302):
                response.failure(f"expected a redirect, got {response.status_code}")
