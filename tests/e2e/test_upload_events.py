"""Progress as server-sent events: upload bytes, then the transcode, until the video is ready."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.accounts import Account
from tests.support.media import make_clip
from tests.support.processes import Processes


def read_events(
    url: str, timeout: float = 180, subscribed: threading.Event | None = None
) -> list[tuple[str, dict]]:
    """Every event of the stream until it ends (retrying until the video is known).

    ``subscribed`` is set once the stream is open: the server subscribes before it answers, so
    from then on no update is missed.
    """
    deadline = time.monotonic() + timeout
    while True:
        with httpx.stream("GET", url, timeout=httpx.Timeout(timeout, connect=5)) as response:
            if response.status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            if subscribed is not None:
                subscribed.set()
            events: list[tuple[str, dict]] = []
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[len("data: ") :])))
                    if name == "end":
                        return events
            return events


def test_events_follow_the_upload_and_the_transcode(
    procs: Processes, media_dir: Path, account: Account
) -> None:
    upload = procs.service("upload", env={"UPLOAD_PROGRESS_INTERVAL_SECONDS": "0.05"})
    procs.worker("push")
    data = make_clip(media_dir / "events-clip.mp4", seconds=2, size="320x180").read_bytes()
    video_id = uuid.uuid4()
    listener: list[list[tuple[str, dict]]] = []
    subscribed = threading.Event()
    url = f"{upload.url}/api/videos/{video_id}/events"
    reader = threading.Thread(target=lambda: listener.append(read_events(url, 180, subscribed)))
    reader.start()

    def slow_body() -> Iterator[bytes]:
        step = len(data) // 8 + 1
        for offset in range(0, len(data), step):
            yield data[offset : offset + step]
            if offset == 0:
                # The video is known from its first bytes on; the rest of the body waits for
                # the listener, so that it follows the upload however late its thread runs.
                subscribed.wait(60)
            time.sleep(0.3)

    created = httpx.put(
        f"{upload.url}/api/videos/{video_id}",
        content=slow_body(),
        headers={**account.headers, "Content-Type": "video/mp4"},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    assert created.json()["links"]["progress"] == f"/api/videos/{video_id}/events"
    reader.join(timeout=180)
    events = listener[0]
    stages = [data.get("stage") for _, data in events]
    received = [d["bytes_received"] for _, d in events if d.get("stage") == "uploading"]
    assert len(received) >= 3 and received == sorted(received) and received[-1] <= len(data)
    assert "queued" in stages and "transcoding" in stages
    assert stages.index("queued") > stages.index("uploading")
    assert events[-1][0] == "end" and events[-1][1]["stage"] == "ready"

    again = httpx.put(
        f"{upload.url}/api/videos/{video_id}",
        content=data,
        headers={**account.headers, "Content-Type": "video/mp4"},
    )
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    # A finished video's stream says so at once and ends.
    assert read_events(f"{upload.url}/api/videos/{video_id}/events", timeout=10)[0][0] == "end"
    unknown = httpx.get(f"{upload.url}/api/videos/{uuid.uuid4()}/events")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
