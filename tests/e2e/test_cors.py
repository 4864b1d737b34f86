"""CORS on the origin, an edge and the balancer: preflights and Range reads from allowed and
disallowed sites, and a page on another site playing a stream through the edge with hls.js."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import sync_playwright

from shared.runtime.resources import Resources
from tests.support.balancer import start_balancer
from tests.support.browser import launch_chromium
from tests.support.cross_site import serve_site
from tests.support.edge import media_keys, start_edge
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.signing import signed

DISALLOWED = "https://elsewhere.example"


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The other site, served on a port of its own: ``http://127.0.0.1:<port>``."""
    with serve_site() as url:
        yield url


@pytest.fixture(scope="module")
def fronts(test_env: dict[str, str], test_root: Path, site: str) -> Iterator[dict[str, str]]:
    """Origin, an edge in front of it and a balancer over the edge, all allowing only ``site``."""
    env = {**test_env, "CORS_ALLOWED_ORIGINS": json.dumps([site])}
    procs = Processes(test_root / "logs" / "cors", env)
    try:
        # The stream API signs URLs for the edge, which starts first in front of the origin's port.
        origin_port = free_port()
        origin_url = f"http://127.0.0.1:{origin_port}"
        edge = start_edge(procs, origin_url, test_root / "cors-edge-cache").url or ""
        origin = procs.service("origin", env={"ORIGIN_CDN_BASE_URL": edge}, port=origin_port)
        balancer = start_balancer(procs, {"edge-a": edge})
        yield {"origin": origin.url or "", "edge": edge, "balancer": balancer.url or ""}
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
async def video(res: Resources, media_dir: Path) -> AsyncIterator[SeededVideo]:
    ladder = make_ladder(media_dir, seconds=8)
    yield await seed_video(res, ladder, title="CORS test pattern", seconds=8)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
        },
        timeout=30,
    )


@pytest.mark.parametrize("front", ["origin", "edge", "balancer"])
def test_allowed_site_reads_ranges_and_others_get_no_cors_headers(
    fronts: dict[str, str], video: SeededVideo, site: str, front: str
) -> None:
    key = next(k for k in media_keys(video) if k.endswith(".m4s"))
    url = signed(fronts[front], key)

    answer = preflight(url, site)
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == site
    assert "GET" in answer.headers["access-control-allow-methods"]
    assert "range" in answer.headers["access-control-allow-headers"].lower()
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "Origin" in answer.headers["vary"]

    read = httpx.get(url, headers={"Origin": site, "Range": "bytes=0-99"}, timeout=30)
    assert read.status_code == 206 and len(read.content) == 100
    assert read.headers["access-control-allow-origin"] == site
    exposed = {h.strip().lower() for h in read.headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "content-length", "etag", "accept-ranges"} <= exposed
    assert "Origin" in read.headers["vary"]
    # One answer per header: the balancer speaks for the edge behind it, not on top of it.
    assert len(read.headers.get_list("access-control-allow-origin")) == 1

    refused = preflight(url, DISALLOWED)
    assert refused.status_code == 204 and cors_headers(refused) == {}
    read = httpx.get(url, headers={"Origin": DISALLOWED, "Range": "bytes=0-99"}, timeout=30)
    assert read.status_code == 206 and cors_headers(read) == {}


@pytest.mark.parametrize("front", ["edge", "balancer"])
def test_other_methods_are_still_refused(fronts: dict[str, str], front: str) -> None:
    url = signed(fronts[front], "videos/none/hls/360p/seg_00000.m4s")
    answer = httpx.request("OPTIONS", url, timeout=30)
    assert answer.status_code == 405
    assert "GET" in answer.headers["allow"]


def test_a_page_on_another_site_plays_through_the_edge(
    fronts: dict[str, str], video: SeededVideo, site: str
) -> None:
    stream = httpx.get(f"{fronts['origin']}/api/stream/{video.id}", timeout=30)
    assert stream.status_code == 200, stream.text
    master_url = stream.json()["master_url"]
    assert master_url.startswith(f"{fronts['edge']}/origin/"), master_url
    with sync_playwright() as p:
        browser = launch_chromium(p, "--autoplay-policy=no-user-gesture-required")
        try:
            page = browser.new_page()
            seen: list[tuple[str, int]] = []
            page.on("response", lambda r: seen.append((r.url, r.status)))
            page.goto(f"{site}/?src={quote(master_url, safe='')}")
            page.wait_for_function(
                "() => window.playback && window.playback.video.currentTime > 2", timeout=60_000
            )
            errors = page.evaluate("() => window.playback.errors")
            assert not [e for e in errors if e["fatal"]], errors
            media = [(url, status) for url, status in seen if "/origin/" in url]
            assert any(".m4s" in url for url, _ in media)
            assert all(url.startswith(fronts["edge"]) for url, _ in media), media
            assert all(status in (200, 206) for _, status in media), media

            # The same page from a site the platform does not allow cannot read the playlist.
            other = site.replace("127.0.0.1", "localhost")
            page = browser.new_page()
            page.goto(f"{other}/?src={quote(master_url, safe='')}")
            page.wait_for_function(
                "() => window.playback.errors.some(e => e.fatal)", timeout=30_000
            )
            assert page.evaluate("() => window.playback.video.currentTime") == 0
        finally:
            browser.close()
