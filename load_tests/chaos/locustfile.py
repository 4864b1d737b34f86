"""The load of a chaos run: HLS viewers and both kinds of uploader, every request written down.

Each request becomes one JSON line in ``VSP_CHAOS_REQUESTS``: when it started, its name, whether
it failed, and for uploads what the answer said (the new video's id, the tus location and
offset). From these the run tells which requests each fault window saw fail, and which uploads
the clients were told had finished.
"""

from __future__ import annotations

import json
import os
from typing import Any

from locust import between, events

from load_tests import users

UPLOADS = frozenset({"PUT /api/videos", "tus create", "tus patch", "tus head"})
_LOG = open(os.environ["VSP_CHAOS_REQUESTS"], "a", buffering=1)


class Viewer(users.Viewer):
    fixed_count = int(os.environ.get("VSP_CHAOS_VIEWERS", "6"))


# Paced so that the two workers keep up: every upload of the run must have become a video
# shortly after the load stops.
class StreamUploader(users.StreamUploader):
    fixed_count = 1
    wait_time = between(6, 14)


class TusUploader(users.TusUploader):
    fixed_count = 1
    wait_time = between(6, 14)


def _answer(name: str, response: Any) -> dict[str, Any]:
    """What an upload's answer says: the video id, the tus location and offset."""
    headers = getattr(response, "headers", None) or {}
    found: dict[str, Any] = {
        "location": headers.get("Location"),
        "offset": headers.get("Upload-Offset"),
    }
    if name == "tus create":
        found["video_id"] = headers.get("Video-Id")
    if name == "PUT /api/videos" and getattr(response, "status_code", 0) == 201:
        try:
            found["video_id"] = json.loads(response.text)["id"]
        except (ValueError, KeyError, TypeError):
            pass
    return found


@events.request.add_listener  # type: ignore[untyped-decorator]
def _record(
    request_type: str,
    name: str,
    response: Any = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    url: str | None = None,
    **_: Any,
) -> None:
    if request_type == "PLAYER":  # the viewers' playback measurements, not requests
        return
    entry: dict[str, Any] = {
        "t": start_time,
        "name": name,
        "ok": exception is None,
        "status": getattr(response, "status_code", 0),
        "url": url,
    }
    if name in UPLOADS:
        entry.update(_answer(name, response))
    _LOG.write(json.dumps(entry) + "\n")
