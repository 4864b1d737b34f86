"""Settings and helpers the Locust scenarios share (read from the environment of the run)."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import httpx

from load_tests.harness import RESULTS
from shared.core import ports

ORIGIN_URL = os.environ.get("VSP_ORIGIN_URL", ports.local_url(ports.ORIGIN))
UPLOAD_URL = os.environ.get("VSP_UPLOAD_URL", ports.local_url(ports.UPLOAD))
TUS_URL = os.environ.get("VSP_TUS_URL", ports.local_url(ports.CHUNKED_UPLOAD) + "/files/")
REDIRECT_URL = os.environ.get("VSP_REDIRECT_URL", ports.local_url(ports.NGINX_REDIRECT))
# Where viewers fetch playlists and segments: haproxy in front of the edges by default.
DELIVERY_URL = os.environ.get("VSP_DELIVERY_URL", ports.local_url(ports.HAPROXY))
# Path tokens let the edges cache one copy of each object for every viewer; "query" signs each
# URL for one viewer, as the streaming gateway did.
SIGNING_MODE = os.environ.get("VSP_SIGNING_MODE", "token")
# The account uploaders act for: an API key (``vsp keys create``), sent as a bearer token.
API_KEY = os.environ.get("VSP_API_KEY", "")


def auth_headers() -> dict[str, str]:
    """The ``Authorization`` header of the uploaders' account (none without VSP_API_KEY)."""
    return {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}


_videos: list[str] = []
_lock = threading.Lock()


def ready_videos() -> list[str]:
    """Ids of ready videos (VSP_VIDEO_IDS, or the origin's catalog), fetched once per run."""
    with _lock:
        if _videos:
            return _videos
        listed = os.environ.get("VSP_VIDEO_IDS")
        if listed:
            _videos.extend(v for v in listed.split(",") if v)
        else:
            body: Any = httpx.get(
                f"{ORIGIN_URL}/api/videos", params={"state": "ready", "limit": 100}
            ).json()
            items = body.get("items", body.get("videos", [])) if isinstance(body, dict) else body
            _videos.extend(v["id"] for v in items if v.get("state") == "ready")
        if not _videos:
            raise RuntimeError("no ready video to watch: run `make up` (it uploads a demo clip)")
        return _videos


def zipf_choice(items: list[str], s: float = 1.1) -> str:
    """Popular items more often, as real catalogs are watched."""
    weights = [1 / (rank**s) for rank in range(1, len(items) + 1)]
    return random.choices(items, weights)[0]


def signed_master_path(video_id: str) -> str:
    """The path and query of a freshly signed master playlist URL."""
    params = {"mode": SIGNING_MODE} if SIGNING_MODE != "query" else {}
    master = httpx.get(f"{ORIGIN_URL}/api/stream/{video_id}", params=params, timeout=10).json()[
        "master_url"
    ]
    parsed = httpx.URL(master)
    return parsed.raw_path.decode()


def write_summary(name: str, summary: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}_summary.json"
    path.write_text(json.dumps(summary, indent=2))
    return path
