"""The player page in headless Chromium: hls.js plays signed HLS, the quality selector switches.

Screenshots are kept under the test's tmp path; their paths are printed (``pytest -s``).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from shared.runtime.resources import Resources
from tests.support.browser import launch_chromium
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.ports import free_port
from tests.support.processes import Processes, wait_http


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> str:
    return module_procs.service("origin").url


@pytest.fixture(scope="module")
async def video(res: Resources, media_dir: Path) -> AsyncIterator[SeededVideo]:
    ladder = make_ladder(media_dir, seconds=12)
    yield await seed_video(res, ladder, title="Player test pattern", seconds=12)


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = launch_chromium(p, "--autoplay-policy=no-user-gesture-required")
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 800})
        finally:
            browser.close()


def watch_requests(page: Page) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    page.on("response", lambda r: seen.append((r.url, r.status)))
    return seen


def player_state(page: Page) -> dict[str, Any]:
    return page.evaluate(  # type: ignore[no-any-return]
        """() => {
            const p = window.vspPlayer, hls = p.hls;
            return {
                time: p.video.currentTime, height: p.video.videoHeight,
                level: hls ? hls.currentLevel : null, errors: p.state.errors,
                levels: hls ? hls.levels.map(l => l.height) : [],
            };
        }"""
    )


def test_player_plays_and_switches_quality(
    page: Page, origin: str, video: SeededVideo, tmp_path: Path
) -> None:
    seen = watch_requests(page)
    page.goto(f"{origin}/player?video={video.id}")
    page.wait_for_function(
        "() => window.vspPlayer && window.vspPlayer.video.currentTime > 5", timeout=60_000
    )
    options = page.locator("#quality option").all_inner_texts()
    assert options[0] == "Auto"
    assert [o.split(" ")[0] for o in options[1:]] == ["360p", "180p"]
    assert "Player test pattern" in page.locator("#catalog").inner_text()
    before = player_state(page)
    levels = before["levels"]
    target = levels.index(180) if before["height"] != 180 else levels.index(360)
    target_height = levels[target]
    page.select_option("#quality", str(target))
    page.wait_for_function(
        f"""() => {{
            const p = window.vspPlayer;
            return p.hls.currentLevel === {target} && p.video.videoHeight === {target_height}
                && !p.video.paused;
        }}""",
        timeout=30_000,
    )
    after = player_state(page)
    assert after["height"] == target_height != before["height"]
    assert not [e for e in after["errors"] if e["fatal"]], after["errors"]
    shot = tmp_path / "player.png"
    page.screenshot(path=str(shot))
    print(f"player screenshot: {shot}")
    media = [(url, status) for url, status in seen if "/origin/" in url]
    assert any(".m4s" in url for url, _ in media)
    assert all(status in (200, 206) for _, status in media), media


def test_player_works_behind_a_proxy_under_a_path_prefix(
    page: Page, origin: str, video: SeededVideo, tmp_path: Path
) -> None:
    """Relative URLs: served through a reverse proxy at /cdn/, every request goes through it."""
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""daemon off; worker_processes 1; pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port};
    location /cdn/ {{ proxy_pass {origin}/; }}
  }}
}}
"""
    )
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp_path)])
    try:
        proxy = f"http://127.0.0.1:{port}/cdn"
        wait_http(f"{proxy}/healthz", timeout=20)
        seen = watch_requests(page)
        page.goto(f"{proxy}/player?video={video.id}")
        page.wait_for_function(
            "() => window.vspPlayer && window.vspPlayer.video.currentTime > 2", timeout=60_000
        )
        shot = tmp_path / "player-behind-proxy.png"
        page.screenshot(path=str(shot))
        print(f"player screenshot (behind a proxy): {shot}")
        assert any("/cdn/origin/" in url and ".m4s" in url for url, _ in seen)
        network = [url for url, _ in seen if url.startswith("http")]  # not hls.js's blob: worker
        assert network and all(url.startswith(proxy) for url in network), network
    finally:
        nginx.terminate()
        nginx.wait(10)
