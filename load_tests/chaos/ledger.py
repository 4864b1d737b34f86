"""What happened during a chaos run, read from its records: the requests the load made, the
database's videos and jobs, and the workers' logs.

- An upload is *completed* when its client was told so: a 201 with the video's id, or a tus
  answer whose offset reached the file's length. A completed upload is *lost* when its video is
  not ready once the run has drained.
- A job is *published* once the outbox marked its row sent, *done* when its video is ready,
  *duplicated* when workers finished its encode more than once (``job <id> done (succeeded)``
  logged twice), and *lost* when its video is not ready once the run has drained.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

VIEWER_REQUESTS = frozenset({"master.m3u8", "variant.m3u8", "init.mp4", "segment.m4s"})
_DONE = re.compile(r"job ([0-9a-f-]{36}) done \(succeeded\)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Upload:
    kind: str  # "stream" or "tus"
    started: float  # wall clock
    key: str | None  # the video id (stream) or the tus upload id; None when never created
    completed: bool = False
    video_id: str | None = None
    state: str | None = None  # the video's state once drained
    refused: int | None = None  # the status of the last failed answer (0: none came)

    @property
    def lost(self) -> bool:
        return self.completed and self.state != "ready"


@dataclass
class Job:
    id: str
    video_id: str
    created: float  # wall clock
    sent: bool
    state: str
    error: str | None
    done_count: int = 0

    @property
    def done(self) -> bool:
        return self.state == "ready"


def read_requests(path: Path) -> list[dict[str, Any]]:
    """The load's requests in the order they started."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((r for r in rows if r.get("t") is not None), key=lambda r: r["t"])


def _tus_id(url: str | None) -> str | None:
    found = _UUID.findall(url or "")
    return found[-1] if found else None


def uploads_of(requests: list[dict[str, Any]], length: int) -> list[Upload]:
    """Every upload the load started, and whether its client was told it completed."""
    found: list[Upload] = []
    tus: dict[str, Upload] = {}
    for r in requests:
        name = r["name"]
        upload: Upload | None = None
        if name == "PUT /api/videos":
            video_id = r.get("video_id")  # set on a 201 only
            upload = Upload("stream", r["t"], video_id, bool(video_id), video_id)
            found.append(upload)
        elif name == "tus create":
            upload_id = _tus_id(r.get("location")) if r["ok"] else None
            upload = Upload("tus", r["t"], upload_id, video_id=r.get("video_id"))
            found.append(upload)
            if upload_id:
                tus[upload_id] = upload
        elif name in ("tus patch", "tus head"):
            upload = tus.get(_tus_id(r.get("url")) or "")
            if upload is not None and r["ok"] and str(r.get("offset")) == str(length):
                upload.completed = True
        if upload is not None and not r["ok"]:
            upload.refused = r.get("status") or 0
    return found


def viewer_requests(requests: list[dict[str, Any]], start: float, end: float) -> tuple[int, int]:
    """(failed, all) viewer requests that started in ``[start, end)``."""
    window = [r for r in requests if r["name"] in VIEWER_REQUESTS and start <= r["t"] < end]
    return sum(1 for r in window if not r["ok"]), len(window)


def done_counts(logs: list[Path]) -> Counter[str]:
    """How many times the workers' logs say each job's encode finished."""
    counts: Counter[str] = Counter()
    for path in logs:
        if path.exists():
            counts.update(_DONE.findall(path.read_text(errors="replace")))
    return counts


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def _fetch(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_dsn(database_url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def jobs(database_url: str, logs: list[Path]) -> list[Job]:
    """Every transcode job in the database, with its video's state and its finished encodes."""
    rows = asyncio.run(
        _fetch(
            database_url,
            "SELECT j.id, j.video_id, j.created_at, j.sent_at, v.state, v.error"
            " FROM transcode_jobs j JOIN videos v ON v.id = j.video_id"
            " WHERE j.type = 'transcode' ORDER BY j.created_at",
        )
    )
    counts = done_counts(logs)
    return [
        Job(
            str(r["id"]),
            str(r["video_id"]),
            r["created_at"].timestamp(),
            r["sent_at"] is not None,
            r["state"],
            r["error"],
            counts[str(r["id"])],
        )
        for r in rows
    ]


def resolve(database_url: str, uploads: list[Upload]) -> None:
    """Fill in the video of each tus upload the client saw created."""
    tus_ids = [uuid.UUID(u.key) for u in uploads if u.kind == "tus" and u.key]
    rows = asyncio.run(
        _fetch(database_url, "SELECT id, video_id FROM uploads WHERE id = ANY($1)", tus_ids)
    )
    videos_of_tus = {str(r["id"]): str(r["video_id"]) for r in rows if r["video_id"]}
    for upload in uploads:
        if upload.kind == "tus" and upload.key:
            # Its creation named the video (Video-Id), which outlives the upload's row.
            upload.video_id = videos_of_tus.get(upload.key, upload.video_id)


def settle(database_url: str, uploads: list[Upload]) -> None:
    """Fill in the state of each upload's video ("missing" when there is no such video)."""
    ids = [uuid.UUID(u.video_id) for u in uploads if u.video_id]
    rows = asyncio.run(_fetch(database_url, "SELECT id, state FROM videos WHERE id = ANY($1)", ids))
    states = {str(r["id"]): r["state"] for r in rows}
    for upload in uploads:
        if upload.video_id:
            upload.state = states.get(upload.video_id, "missing")


def pending_videos(database_url: str, video_ids: list[str]) -> int:
    """How many videos are still on their way: of ``video_ids``, those neither ready nor failed
    (missing ones included); of the rest, those with a job that are neither."""
    ids = [uuid.UUID(v) for v in video_ids]
    rows = asyncio.run(
        _fetch(
            database_url,
            "SELECT id, state FROM videos WHERE id = ANY($1)"
            " OR (id IN (SELECT video_id FROM transcode_jobs)"
            " AND state NOT IN ('ready', 'failed', 'deleted'))",
            ids,
        )
    )
    states = {r["id"]: r["state"] for r in rows}
    waiting = sum(1 for v in ids if states.get(v) not in ("ready", "failed"))
    return waiting + sum(1 for v in states if v not in ids)
