"""The player in headless Chromium shows the French captions hls.js loads, at their times."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.browser import chromium
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.paths import ROOT
from tests.support.processes import Proc, Processes

SECONDS = 12
FR_SRT = (
    "1\n00:00:01,000 --> 00:00:04,000\nBonjour tout le monde\n\n"
    "2\n00:00:06,000 --> 00:00:09,000\nÇa va ?\n"
)
EN_VTT = "WEBVTT\n\n00:00:01.000 --> 00:00:04.000\nHello everyone\n"
SCREENSHOT = ROOT / "results" / "screenshots" / "captions-fr.png"


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> Proc:
    return module_procs.service("origin")


@pytest.fixture(scope="module")
async def video(res: Resources, media_dir: Path, account: Account) -> AsyncIterator[SeededVideo]:
    ladder = make_ladder(media_dir, seconds=SECONDS)
    yield await seed_video(
        res, ladder, title="Subtitled pattern", seconds=SECONDS, owner_id=account.user_id
    )


@pytest.fixture
def page() -> Iterator[Page]:
    with chromium("--autoplay-policy=no-user-gesture-required") as browser:
        yield browser.new_page(viewport={"width": 1280, "height": 800})


def add_captions(origin: Proc, video: SeededVideo, account: Account) -> None:
    for language, body, content_type, label in (
        ("fr", FR_SRT, "application/x-subrip", "Français"),
        ("en", EN_VTT, "text/vtt", "English"),
    ):
        response = httpx.put(
            f"{origin.url}/api/videos/{video.id}/captions/{language}",
            content=body.encode(),
            headers={**account.headers, "Content-Type": content_type},
            params={"label": label},
        )
        assert response.status_code == 200, response.text


def shown_at(page: Page, seconds: float) -> dict[str, Any]:
    """Seek to ``seconds``, paused, and read the showing text track's active cues there."""
    page.evaluate(
        "(t) => { const v = window.vspPlayer.video; v.pause(); v.currentTime = t; }", seconds
    )
    page.wait_for_function(
        """(t) => {
            const v = window.vspPlayer.video;
            return !v.seeking && Math.abs(v.currentTime - t) < 0.05 && v.readyState >= 2;
        }""",
        arg=seconds,
        timeout=30_000,
    )
    # hls.js loads the subtitle segment of the new position and adds its cues a moment later.
    return page.evaluate(  # type: ignore[no-any-return]
        """async (t) => {
            const v = window.vspPlayer.video;
            const showing = () => [...v.textTracks].filter((track) => track.mode === "showing");
            const cues = () => showing().flatMap((track) => [...(track.activeCues || [])]);
            for (let i = 0; i < 50 && !cues().length; i += 1) {
                await new Promise((done) => setTimeout(done, 100));
            }
            return {
                time: v.currentTime,
                languages: showing().map((track) => track.language),
                texts: cues().map((cue) => cue.text),
            };
        }""",
        seconds,
    )


def test_choosing_french_shows_the_french_cues_at_their_times(
    page: Page, origin: Proc, video: SeededVideo, account: Account
) -> None:
    add_captions(origin, video, account)
    page.goto(f"{origin.url}/player?video={video.id}")
    page.wait_for_function(
        "() => window.vspPlayer && window.vspPlayer.video.currentTime > 0.5", timeout=60_000
    )
    page.wait_for_function(
        "() => document.querySelectorAll('#subtitles option').length === 3", timeout=30_000
    )
    options = page.locator("#subtitles option").all_inner_texts()
    assert options[0] == "Off" and sorted(options[1:]) == ["English", "Français"]
    page.select_option("#subtitles", label="Français")
    page.wait_for_function(
        """() => {
            const hls = window.vspPlayer.hls;
            return hls.subtitleDisplay && hls.subtitleTrack >= 0
                && hls.subtitleTracks[hls.subtitleTrack].lang === "fr";
        }""",
        timeout=30_000,
    )

    first = shown_at(page, 2.0)
    assert first["languages"] == ["fr"], first
    assert first["texts"] == ["Bonjour tout le monde"], first
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    print(f"captions screenshot: {SCREENSHOT}")
    # Between the cues nothing is shown; then the second cue.
    assert shown_at(page, 5.0)["texts"] == []
    assert shown_at(page, 7.5)["texts"] == ["Ça va ?"]

    page.select_option("#subtitles", label="Off")
    page.wait_for_function("() => !window.vspPlayer.hls.subtitleDisplay", timeout=10_000)
    assert shown_at(page, 2.0)["languages"] == []
    errors = page.evaluate("() => window.vspPlayer.state.errors")
    assert not [e for e in errors if e["fatal"]], errors
