"""Concurrency caps: past a cap a request is refused at once with 503 and Retry-After, and the
requests already admitted finish; once they have, new ones are admitted again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.support.accounts import Account
from tests.support.media import make_clip
from tests.support.metrics import metric
from tests.support.polling import wait_for
from tests.support.upload import own_service

TUS = {"Tus-Resumable": "1.0.0"}


class HeldRequest:
    """A request whose body stops after its first bytes until ``release``, sent in a thread."""

    def __init__(self, send: Callable[[Iterator[bytes]], httpx.Response], body: bytes) -> None:
        self.body = body
        self.released = threading.Event()
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._send, args=(send,))
        self.thread.start()

    def _send(self, send: Callable[[Iterator[bytes]], httpx.Response]) -> None:
        self.response = send(self._held())

    def _held(self) -> Iterator[bytes]:
        yield self.body[:512]
        self.released.wait(60)
        yield self.body[512:]

    def finish(self) -> httpx.Response:
        self.released.set()
        self.thread.join(60)
        assert self.response is not None
        return self.response


def _in_progress(url: str, cap: str, count: int) -> None:
    wait_for(
        lambda: metric(url, "http_capped_requests_in_progress", cap=cap) == count,
        timeout=30,
        what=f"{count} {cap} requests in progress",
    )


def _assert_busy(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "service_unavailable"
    assert elapsed < 3, f"the refusal took {elapsed:.1f} s"


def test_uploads_and_event_streams_past_their_caps_are_refused_at_once(
    test_env: dict[str, str], test_root: Path, media_dir: Path, account: Account
) -> None:
    data = make_clip(media_dir / "backpressure.mp4", seconds=1, size="160x90").read_bytes()
    limits = {"UPLOAD_MAX_CONCURRENT_UPLOADS": "2", "EVENTS_MAX_STREAMS": "2"}
    with own_service("upload", test_env, test_root / "logs" / "backpressure", **limits) as svc:

        def post(body: bytes | Iterator[bytes]) -> httpx.Response:
            headers = {**account.headers, "Content-Type": "video/mp4"}
            return httpx.post(f"{svc.url}/api/videos", content=body, headers=headers, timeout=60)

        held = [HeldRequest(post, data) for _ in range(2)]
        _in_progress(svc.url, "upload", 2)
        started = time.monotonic()
        refused = post(data)
        _assert_busy(refused, time.monotonic() - started)
        assert metric(svc.url, "http_capped_requests_refused_total", cap="upload") == 1

        created = [h.finish() for h in held]
        assert [r.status_code for r in created] == [201, 201], [r.text for r in created]
        assert post(data).status_code == 201

        events = f"{svc.url}{created[0].headers['location']}/events"
        with httpx.stream("GET", events, timeout=30) as first:
            with httpx.stream("GET", events, timeout=30) as second:
                assert (first.status_code, second.status_code) == (200, 200)
                started = time.monotonic()
                third = httpx.get(events, timeout=30)
                _assert_busy(third, time.monotonic() - started)
        _in_progress(svc.url, "events", 0)
        with httpx.stream("GET", events, timeout=30) as again:
            assert again.status_code == 200


def test_tus_patches_past_the_cap_are_refused_at_once(
    test_env: dict[str, str], test_root: Path, account: Account
) -> None:
    limits = {"CHUNKED_UPLOAD_MAX_CONCURRENT_PATCHES": "1"}
    logs = test_root / "logs" / "backpressure-tus"
    with own_service("chunked_upload", test_env, logs, **limits) as svc:

        def create() -> str:
            # A creation without a body is never capped.
            created = httpx.post(
                f"{svc.url}/files/",
                headers={**TUS, **account.headers, "Upload-Length": "4096"},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            return str(created.headers["location"])

        def patcher(location: str) -> Callable[[bytes | Iterator[bytes]], httpx.Response]:
            def patch(body: bytes | Iterator[bytes]) -> httpx.Response:
                headers = {
                    **TUS,
                    **account.headers,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                }
                return httpx.patch(
                    f"{svc.url}{location}", content=body, headers=headers, timeout=60
                )

            return patch

        body = bytes(1024)
        held = HeldRequest(patcher(create()), body)
        _in_progress(svc.url, "tus_patch", 1)
        other = patcher(create())
        started = time.monotonic()
        refused = other(body)
        _assert_busy(refused, time.monotonic() - started)
        assert refused.headers["tus-resumable"] == "1.0.0"

        assert held.finish().status_code == 204
        accepted = other(body)
        assert accepted.status_code == 204 and accepted.headers["upload-offset"] == "1024"
