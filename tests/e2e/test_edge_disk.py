"""Hits on objects too big for the memory tier, sent from their file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.edge import start_edge
from tests.support.metrics import metric
from tests.support.processes import Processes
from tests.support.signing import signed
from tests.support.storage import digest, put_object


def test_disk_hits_serve_whole_ranges_head_and_conditionals(
    procs: Processes, tmp_path: Path
) -> None:
    origin = procs.service("origin")
    edge = (
        start_edge(
            procs,
            origin.url or "",
            tmp_path / "cache",
            EDGE_MEMORY_MAX_OBJECT_BYTES=str(64 * 1024),
            EDGE_PREFETCH_NEXT_SEGMENT="false",
        ).url
        or ""
    )
    key = f"videos/{uuid.uuid4()}/hls/1080p/seg_00001.m4s"
    # Over 2 MiB: bigger than one read of the file.
    data = os.urandom(2 * 1024 * 1024 + 12_345)
    size = len(data)
    put_object(key, data, "video/iso.segment")
    url = signed(edge, key)

    first = httpx.get(url)
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    assert digest(first.content) == digest(data)
    hit = httpx.get(url)
    assert (hit.status_code, hit.headers["x-cache"]) == (200, "HIT")
    assert hit.headers["content-length"] == str(size)
    assert digest(hit.content) == digest(data)
    assert metric(edge, "edge_cache_objects", tier="memory") == 0, "kept in memory after all"

    for header, (start, end) in {
        "bytes=0-0": (0, 0),
        "bytes=1048570-1048580": (1_048_570, 1_048_580),
        "bytes=-100": (size - 100, size - 1),
        "bytes=2000000-": (2_000_000, size - 1),
        f"bytes=5-{size + 50}": (5, size - 1),
    }.items():
        part = httpx.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}", header
        assert part.headers["content-length"] == str(end - start + 1), header
        assert digest(part.content) == digest(data[start : end + 1]), header
    beyond = httpx.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.json()["error"] == "range_not_satisfiable"

    head = httpx.head(url)
    assert (head.status_code, head.headers["content-length"], head.content) == (
        200,
        str(size),
        b"",
    )
    unchanged = httpx.get(url, headers={"If-None-Match": hit.headers["etag"]})
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    served = metric(edge, "edge_served_bytes_total", result="hit")
    assert served >= size + 1 + 11 + 100 + (size - 2_000_000) + (size - 5)
    # The object route's counts reach the platform metrics the balancer scrapes.
    route = "/origin/{path:path}"
    assert metric(edge, "http_requests_total", route=route, status="206") == 5
    assert metric(edge, "http_requests_total", route=route, method="HEAD") == 1
    assert metric(edge, "http_request_duration_seconds_count", route=route) == 10
    assert metric(edge, "http_requests_in_progress", route=route) == 0
    assert metric(edge, "edge_requests_total", result="miss") == 1
    assert metric(edge, "edge_cache_hit_ratio") == pytest.approx(9 / 10)
