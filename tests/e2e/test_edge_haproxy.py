"""Two edges behind haproxy: each object lives on one edge; a dead edge is taken out."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx

from services.configs.proxies import DEFAULT_EDGES, render_haproxy
from tests.support.edge import origin_object_gets, start_edge
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.processes import Processes
from tests.support.proxies import start_haproxy
from tests.support.signing import signed, tokened
from tests.support.storage import digest, put_object


def test_repository_haproxy_cfg_is_the_rendered_default() -> None:
    assert (ROOT / "haproxy.cfg").read_text() == render_haproxy(DEFAULT_EDGES)


def test_consistent_hashing_puts_each_rendition_on_one_edge(
    procs: Processes, tmp_path: Path
) -> None:
    origin = procs.service("origin")
    edges = [
        start_edge(procs, origin.url or "", tmp_path / name, name=name)
        for name in ("edge-1", "edge-2")
    ]
    proxy = start_haproxy(procs, tmp_path / "haproxy", [edge.url for edge in edges])
    front = proxy.url or ""
    objects: dict[str, tuple[str, bytes]] = {}
    for _ in range(16):
        prefix = f"videos/{uuid.uuid4()}/hls/"
        key = prefix + "360p/init.mp4"
        objects[key] = (prefix, os.urandom(10_000))
        put_object(key, objects[key][1], "video/mp4")

    before = origin_object_gets(origin.url or "", "200")
    placement: dict[str, str] = {}
    for key, (prefix, data) in objects.items():
        seen = set()
        # The query signature and a path token of the same object land on the same edge.
        for url in (signed(front, key), signed(front, key, ttl=999), tokened(front, key, prefix)):
            response = httpx.get(url)
            assert response.status_code == 200 and digest(response.content) == digest(data)
            seen.add(response.headers["x-edge-id"])
        assert len(seen) == 1, (key, seen)
        placement[key] = seen.pop()
        assert httpx.get(signed(front, key)).headers["x-cache"] == "HIT"
    assert origin_object_gets(origin.url or "", "200") - before == len(objects)
    assert set(placement.values()) == {"edge-1", "edge-2"}, placement

    # Every object of one rendition lands on its edge: the segment an edge prefetches is the
    # one it is asked for next.
    for key, (prefix, _data) in objects.items():
        sibling = prefix + "360p/seg_00001.m4s"
        put_object(sibling, os.urandom(1000), "video/mp4")
        assert httpx.get(signed(front, sibling)).headers["x-edge-id"] == placement[key], sibling

    # Take edge-1 away: haproxy's health checks move its objects to edge-2.
    edges[0].stop()

    def all_on_edge_2() -> bool:
        answers = [httpx.get(signed(front, key)) for key in objects]
        return all(r.status_code == 200 and r.headers["x-edge-id"] == "edge-2" for r in answers)

    wait_for(all_on_edge_2, timeout=30, what="haproxy to route around the stopped edge")
    for key, (_prefix, data) in objects.items():
        assert digest(httpx.get(signed(front, key)).content) == digest(data)
