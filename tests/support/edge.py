"""The edge's tests: edges in front of an origin, what the origin counted, the cache on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx

from tests.support.metrics import metric, samples
from tests.support.origin import SeededVideo
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.signing import tokened

ADMIN_TOKEN = "edge-admin-token-for-tests"
PREFETCH_ENDS = ("stored", "not_found", "error")


def start_edge(
    procs: Processes, origin_url: str, cache_dir: Path, name: str = "edge-a", **env: str
) -> Proc:
    """``vsp serve edge`` on a free port in front of ``origin_url``."""
    port = free_port()
    settings = {
        "EDGE_ID": name,
        "EDGE_PORT": str(port),
        "EDGE_ORIGIN_URL": origin_url,
        "EDGE_CACHE_DIR": str(cache_dir),
        "EDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        **env,
    }
    return procs.service("edge", env=settings, port=port)


def prefetches_settled(edge_url: str) -> float:
    """Next-segment prefetches the edge has finished (stored, not found or failed)."""
    return sum(metric(edge_url, "edge_prefetch_total", outcome=o) for o in PREFETCH_ENDS)


def wait_prefetch_settled(edge_url: str, before: float, count: int = 1) -> None:
    """Wait until ``count`` more prefetches than ``before`` have finished.

    A miss on a segment makes the edge fetch the next one in the background, after the viewer
    has the answer. A test that counts the origin's requests waits for that fetch to end, so it
    neither lands among the requests counted next nor in the next test.
    """
    wait_for(
        lambda: prefetches_settled(edge_url) >= before + count,
        timeout=30,
        what="the edge's next-segment prefetch to finish",
    )


def origin_object_gets(origin_url: str, status: str | None = None) -> int:
    """Object GETs the origin itself counted (with ``status``, or any), whatever the URL style."""
    total = sum(
        sample.value
        for sample in samples(origin_url)
        if sample.name == "http_requests_total"
        and sample.labels.get("method") == "GET"
        and sample.labels.get("route", "").startswith("/origin/")
        and status in (None, sample.labels.get("status"))
    )
    return int(total)


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes in allocated blocks, apparent bytes) of the files under ``root``."""
    blocks = apparent = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                stat = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            blocks += stat.st_blocks * 512
            apparent += stat.st_size
    return blocks, apparent


def cached_files(cache_dir: Path, keys: list[str]) -> list[str]:
    """The keys among ``keys`` the edge holds on disk (its files are named by key hash)."""
    names = {k: hashlib.sha256(k.encode()).hexdigest() for k in keys}
    return [k for k in keys if (cache_dir / f"{names[k]}.body").exists()]


def media_keys(video: SeededVideo) -> list[str]:
    """The video's objects an edge stores (playlists of a seeded video are private)."""
    return [key for key in video.files if not key.endswith(".m3u8")]


async def play(edge: Proc, video: SeededVideo) -> set[str]:
    """The video's init segments, segments and poster through the edge; the X-Cache answers."""
    results = set()
    async with httpx.AsyncClient(timeout=30) as client:
        for key in media_keys(video):
            response = await client.get(tokened(edge.url, key, f"{video.prefix}hls/"))
            assert response.status_code == 200, (key, response.text)
            results.add(response.headers["x-cache"])
    return results


async def delete_video(origin: Proc, video: SeededVideo, admin_token: str) -> httpx.Response:
    """The origin's DELETE /api/videos/{id}, as an operator sends it."""
    async with httpx.AsyncClient(base_url=origin.url, timeout=60) as client:
        return await client.delete(
            f"/api/videos/{video.id}", headers={"Authorization": f"Bearer {admin_token}"}
        )
