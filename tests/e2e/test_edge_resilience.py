"""The edge when the origin goes away, and under a workload larger than its disk cap."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx

from tests.support.edge import disk_usage, origin_object_gets, start_edge
from tests.support.metrics import metric
from tests.support.processes import Processes
from tests.support.signing import signed
from tests.support.storage import digest, put_object


def test_origin_down_serves_stale_and_refuses_uncached(procs: Processes, tmp_path: Path) -> None:
    origin = procs.service("origin")
    # Every object goes stale after 1 s, so serving it later needs stale-if-error.
    edge_proc = start_edge(procs, origin.url or "", tmp_path / "cache", EDGE_MAX_TTL_SECONDS="1")
    edge = edge_proc.url or ""
    prefix = f"videos/{uuid.uuid4()}/hls/360p/"
    cached = {prefix + f"seg_{i:05d}.m4s": os.urandom(40_000) for i in range(3)}
    uncached = prefix + "seg_00042.m4s"
    for key, data in [*cached.items(), (uncached, os.urandom(1000))]:
        put_object(key, data, "video/iso.segment")
    for key in cached:
        assert httpx.get(signed(edge, key)).status_code == 200
    time.sleep(1.2)
    # Stale with the origin up: a conditional request, answered 304, refreshes the copy.
    before = origin_object_gets(origin.url or "", "304")
    first = next(iter(cached))
    refreshed = httpx.get(signed(edge, first))
    assert refreshed.headers["x-cache"] == "REVALIDATED"
    assert digest(refreshed.content) == digest(cached[first])
    assert origin_object_gets(origin.url or "", "304") == before + 1

    origin.stop()
    time.sleep(1.2)
    for key, data in cached.items():
        response = httpx.get(signed(edge, key))
        assert response.status_code == 200, response.text
        assert response.headers["x-cache"] == "STALE"
        assert digest(response.content) == digest(data)
        part = httpx.get(signed(edge, key), headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and digest(part.content) == digest(data[:100])

    refused = httpx.get(signed(edge, uncached))
    assert refused.status_code in (502, 504)
    body = refused.json()
    assert body["error"] in ("upstream_unavailable", "gateway_timeout")
    assert "origin" in body["detail"]
    assert metric(edge, "edge_origin_fetches_total", reason="fill", outcome="unreachable") >= 1
    # Verification still comes first: a forged signature is 403 even for a stale copy.
    forged = httpx.get(signed(edge, first).replace("sig=", "sig=0"))
    assert forged.status_code == 403


def test_disk_stays_under_the_cap(procs: Processes, tmp_path: Path) -> None:
    origin = procs.service("origin")
    cap = 1024 * 1024
    cache_dir = tmp_path / "cache"
    edge_proc = start_edge(
        procs,
        origin.url or "",
        cache_dir,
        EDGE_CACHE_MAX_BYTES=str(cap),
        EDGE_CACHE_MAX_OBJECT_BYTES=str(400_000),
        EDGE_MEMORY_MAX_BYTES=str(256 * 1024),
        EDGE_PREFETCH_NEXT_SEGMENT="false",
    )
    edge = edge_proc.url or ""
    prefix = f"videos/{uuid.uuid4()}/hls/720p/"
    # 3 MiB of segments through a 1 MiB cache: about 4x the cap.
    objects = {prefix + f"seg_{i:05d}.m4s": os.urandom(150_000 + i * 1000) for i in range(20)}
    for key, data in objects.items():
        put_object(key, data, "video/iso.segment")
    peak = 0
    for key, data in objects.items():
        response = httpx.get(signed(edge, key))
        assert response.status_code == 200 and digest(response.content) == digest(data)
        blocks, apparent = disk_usage(cache_dir)
        peak = max(peak, blocks, apparent)
    assert peak <= cap, f"disk use peaked at {peak} bytes over a {cap} byte cap"
    assert sum(len(d) for d in objects.values()) > 2.5 * cap
    assert metric(edge, "edge_cache_evictions_total", tier="disk") >= 10
    assert metric(edge, "edge_cache_bytes", tier="disk") <= cap

    keys = list(objects)
    assert httpx.get(signed(edge, keys[-1])).headers["x-cache"] == "HIT"
    assert httpx.get(signed(edge, keys[0])).headers["x-cache"] == "MISS"

    # An object bigger than EDGE_CACHE_MAX_OBJECT_BYTES is relayed, never stored.
    big_key, big = prefix + "big.mp4", os.urandom(600_000)
    put_object(big_key, big, "video/mp4")
    relayed = httpx.get(signed(edge, big_key))
    assert (relayed.status_code, relayed.headers["x-cache"]) == (200, "PASS")
    assert digest(relayed.content) == digest(big)
    part = httpx.get(signed(edge, big_key), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and digest(part.content) == digest(big[100:200])
    assert max(disk_usage(cache_dir)) <= cap

    # The cache outlives a restart of the edge: the index is rebuilt from disk.
    edge_proc.stop()
    again = start_edge(procs, origin.url or "", cache_dir, EDGE_CACHE_MAX_BYTES=str(cap)).url or ""
    after_restart = httpx.get(signed(again, keys[0]))
    assert after_restart.headers["x-cache"] == "HIT"
    assert digest(after_restart.content) == digest(objects[keys[0]])
    assert max(disk_usage(cache_dir)) <= cap
