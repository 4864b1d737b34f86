"""Headless Chromium through the front door (nginx over HTTPS with HTTP/2): sign in on the
catalog, follow the link to the upload page, upload a clip with tus through ``/files/``, and
play it in the player through nginx -> balancer -> edge, every request over h2. Then a page on
another site plays the same signed stream through the front door with hls.js, by CORS.

The browser's own Resource Timing entries say which protocol carried each request. The
front door's certificate is self-signed: the browser contexts accept it, the Python clients
trust it. Screenshots of a failing page are kept under the test's tmp path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.support.accounts import Account, create_account
from tests.support.browser import chromium, sign_in_on, upload_with_page
from tests.support.cross_site import serve_site
from tests.support.front_door import Platform, start_platform
from tests.support.media import make_clip
from tests.support.metrics import metric
from tests.support.processes import Processes

TITLE = "Through the front door"
# What the page's browser says it fetched, and over what: the navigation entry first.
TIMING = """() => [
  ...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")
].map(e => ({name: e.name, type: e.entryType, initiator: e.initiatorType,
             protocol: e.nextHopProtocol}))"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """Another site (``http://127.0.0.1:<port>``) with a page playing ``?src=`` with hls.js."""
    with serve_site() as url:
        yield url


@pytest.fixture(scope="module")
def platform(test_env: dict[str, str], test_root: Path, site: str) -> Iterator[Platform]:
    """The whole platform behind its front door; the media servers allow ``site`` by CORS."""
    env = {**test_env, "CORS_ALLOWED_ORIGINS": json.dumps([site])}
    procs = Processes(test_root / "logs" / "front-door-browser", env)
    try:
        yield start_platform(procs, test_root / "front-door-browser")
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium("--autoplay-policy=no-user-gesture-required") as browser:
        yield browser


def new_context(browser: Browser) -> BrowserContext:
    """A context of its own that takes the front door's self-signed certificate."""
    return browser.new_context(ignore_https_errors=True)


@contextmanager
def screenshot_on_failure(page: Page, path: Path) -> Iterator[None]:
    """Keep what ``page`` shows at ``path`` when the block fails."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(path))
        print(f"screenshot of the failing page: {path}")
        raise


def timings(page: Page) -> list[dict[str, Any]]:
    """The page's navigation and resource timing entries (URL, type, initiator, protocol)."""
    entries: list[dict[str, Any]] = page.evaluate(TIMING)
    return entries


def not_h2(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in entries if entry["protocol"] != "h2"]


def media_entries(entries: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """The entries whose URL path ends with ``suffix`` (signed URLs carry a query)."""
    return [entry for entry in entries if urlsplit(entry["name"]).path.endswith(suffix)]


def edge_requests(platform: Platform) -> float:
    """Objects the suite's edges have served so far, whatever the cache said."""
    return sum(metric(edge, "edge_requests_total") for edge in platform.suite.urls["edge"])


@dataclass
class Uploaded:
    """A clip uploaded with the upload page, and the tab that did it, still signed in."""

    video_id: str
    owner: Account
    page: Page
    upload_entries: list[dict[str, Any]]


@pytest.fixture(scope="module")
def uploaded(
    platform: Platform,
    browser: Browser,
    media_dir: Path,
    test_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Uploaded]:
    """Sign in on the catalog, follow its link to the upload page and upload there, until the
    video is ready: all through the front door."""
    front = platform.front
    owner = create_account(test_env)
    clip = make_clip(media_dir / "front-door-browser.mp4", seconds=8, size="320x180")
    context = new_context(browser)
    page = context.new_page()
    shot = tmp_path_factory.mktemp("front-door-upload") / "upload.png"
    with screenshot_on_failure(page, shot):
        page.goto(f"{front.https}/")
        sign_in_on(page, owner.name, owner.password)
        page.click('a[href="/upload"]')
        page.wait_for_url(f"{front.https}/upload")
        # One origin for every page: the sign-in carries over to the upload page.
        page.wait_for_selector("#signed-in-as", timeout=15_000)
        video_id = upload_with_page(page, clip, TITLE, timeout_ms=240_000)
        upload_entries = timings(page)
    try:
        yield Uploaded(video_id, owner, page, upload_entries)
    finally:
        context.close()


def test_chromium_uploads_and_plays_through_the_front_door_over_h2(
    platform: Platform, uploaded: Uploaded, tmp_path: Path
) -> None:
    front = platform.front
    upload_entries = uploaded.upload_entries
    assert upload_entries[0]["name"] == f"{front.https}/upload"
    tus = [e for e in upload_entries if urlsplit(e["name"]).path.startswith("/files/")]
    assert tus, upload_entries
    assert all(e["name"].startswith(f"{front.https}/files/") for e in tus), tus
    assert not not_h2(upload_entries), not_h2(upload_entries)

    page = uploaded.page
    served_before = edge_requests(platform)
    with screenshot_on_failure(page, tmp_path / "player.png"):
        # "My videos" lists it; its play link opens the player, all on the front door.
        page.click("#to-my")
        page.wait_for_url(f"{front.https}/my")
        row = f'#my-videos tr[data-id="{uploaded.video_id}"]'
        page.wait_for_selector(f'{row} .state[data-state="ready"]', timeout=30_000)
        page.click(f"{row} a.play")
        page.wait_for_url(f"{front.https}/player?video={uploaded.video_id}")
        assert page.text_content("#signed-in-as") == f"signed in as {uploaded.owner.name}"
        page.wait_for_function("() => window.vspPlayer.video.currentTime > 2", timeout=90_000)
        entries = timings(page)

    assert entries[0]["type"] == "navigation"
    assert entries[0]["name"] == f"{front.https}/player?video={uploaded.video_id}"
    api = [e for e in entries if urlsplit(e["name"]).path.startswith("/api/")]
    assert any(f"/api/stream/{uploaded.video_id}" in e["name"] for e in api), api
    masters = media_entries(entries, "/master.m3u8")
    playlists = media_entries(entries, ".m3u8")
    inits = media_entries(entries, "/init.mp4")
    segments = media_entries(entries, ".m4s")
    # The master, at least one variant playlist, its init segment and media segments.
    assert masters and len(playlists) > len(masters) and inits and segments, entries
    media = playlists + inits + segments
    assert all(e["name"].startswith(f"{front.https}/origin/") for e in media), media
    assert not not_h2(entries), not_h2(entries)

    # The edges behind the balancer served what the browser fetched.
    assert edge_requests(platform) - served_before >= len(media)
    with platform.client() as client:
        again = client.get(segments[0]["name"])
    assert again.status_code == 200 and again.http_version == "HTTP/2"
    assert again.headers["x-cache"] in {"HIT", "MISS"}, again.headers


def test_a_page_on_another_site_plays_the_stream_through_the_front_door(
    platform: Platform, uploaded: Uploaded, browser: Browser, site: str, tmp_path: Path
) -> None:
    front = platform.front
    with platform.client() as client:
        stream = client.get(
            f"{front.https}/api/stream/{uploaded.video_id}", headers=uploaded.owner.headers
        )
    assert stream.status_code == 200, stream.text
    master_url = stream.json()["master_url"]
    assert master_url.startswith(f"{front.https}/origin/"), master_url

    context = new_context(browser)
    try:
        page = context.new_page()
        seen: list[tuple[str, int, str | None]] = []
        page.on(
            "response",
            lambda r: seen.append((r.url, r.status, r.headers.get("access-control-allow-origin"))),
        )
        with screenshot_on_failure(page, tmp_path / "other-site.png"):
            page.goto(f"{site}/?src={quote(master_url, safe='')}")
            page.wait_for_function("() => window.playback.video.currentTime > 2", timeout=90_000)
        errors = page.evaluate("() => window.playback.errors")
        assert not [e for e in errors if e["fatal"]], errors
        media = [answer for answer in seen if urlsplit(answer[0]).path.startswith("/origin/")]
        assert any(".m4s" in url for url, _, _ in media), media
        assert all(url.startswith(f"{front.https}/origin/") for url, _, _ in media), media
        assert all(status in (200, 206) and allow == site for _, status, allow in media), media

        # The same page from a site the platform does not allow cannot read the playlist.
        other = site.replace("127.0.0.1", "localhost")
        page = context.new_page()
        with screenshot_on_failure(page, tmp_path / "disallowed-site.png"):
            page.goto(f"{other}/?src={quote(master_url, safe='')}")
            page.wait_for_function(
                "() => window.playback.errors.some(e => e.fatal)", timeout=60_000
            )
        assert page.evaluate("() => window.playback.video.currentTime") == 0
    finally:
        context.close()
