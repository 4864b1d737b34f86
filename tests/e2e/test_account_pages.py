"""The pages with accounts, in headless Chromium: sign in on the upload page, upload, find the
video in "my videos", edit it there (title, description, tags, captions, a refused poster, a
new transcode), play it signed in, make it private; an anonymous browser cannot play it
any more while its owner still can. A wrong password and a refused token show on the page.

The upload page (chunked_upload) and the player and "my videos" (origin) are on two origins,
so each signs in on its own; within one origin the sign-in lasts across pages of the tab.
Screenshots are kept under the test's tmp path; their folder is printed (``pytest -s``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.support.accounts import create_account
from tests.support.browser import chromium, sign_in_on, upload_with_page
from tests.support.media import make_clip
from tests.support.ports import free_port
from tests.support.processes import Processes

TITLE = "Signed-in upload"
RENAMED = "Renamed on my videos"
CAPTIONS = "WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello\n"
HIDDEN = "this video is private or does not exist"


@dataclass(frozen=True)
class Pages:
    upload: str  # chunked_upload's base URL
    origin: str


@pytest.fixture
def pages(procs: Processes) -> Pages:
    """Both services, each told where the other's pages are."""
    upload_port, origin_port = free_port(), free_port()
    upload = f"http://127.0.0.1:{upload_port}"
    origin = f"http://127.0.0.1:{origin_port}"
    procs.service("origin", port=origin_port, env={"ORIGIN_UPLOAD_PAGE_URL": f"{upload}/upload"})
    procs.service("chunked_upload", port=upload_port, env={"PUBLIC_ORIGIN_URL": origin})
    return Pages(upload, origin)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium("--autoplay-policy=no-user-gesture-required") as browser:
        yield browser


def new_page(browser: Browser, errors: list[str]) -> Page:
    """A page in a context of its own (its own sessionStorage), collecting script errors."""
    page = browser.new_context().new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def wait_playing(page: Page, seconds: float) -> None:
    page.wait_for_function(
        f"() => window.vspPlayer && window.vspPlayer.video.currentTime > {seconds}",
        timeout=60_000,
    )


def stream_answers(page: Page, video_id: str) -> list[int]:
    """Statuses of the stream API's answers for the video, as the page receives them."""
    seen: list[int] = []
    path = f"/api/stream/{video_id}"
    page.on("response", lambda r: seen.append(r.status) if path in r.url else None)
    return seen


def test_signed_in_owner_uploads_lists_plays_and_hides_a_video(
    pages: Pages,
    procs: Processes,
    browser: Browser,
    media_dir: Path,
    test_env: dict[str, str],
    tmp_path: Path,
) -> None:
    owner = create_account(test_env)
    # The replaced run of the re-transcode below is deleted within the test, not after it.
    procs.worker("push", env={"TRANSCODER_OLD_RUN_GRACE_SECONDS": "1"})
    clip = make_clip(media_dir / "account-pages.mp4", seconds=6, size="320x180")
    errors: list[str] = []
    page = new_page(browser, errors)

    # The upload page: sign in, upload, follow the video until it is ready.
    page.goto(f"{pages.upload}/upload")
    sign_in_on(page, owner.name, owner.password)
    video_id = upload_with_page(page, clip, TITLE, timeout_ms=180_000)
    assert page.get_attribute("#to-my", "href") == f"{pages.origin}/my"

    # "My videos" on the origin: another origin, so another sign-in.
    page.click("#to-my")
    page.wait_for_url(f"{pages.origin}/my")
    sign_in_on(page, owner.name, owner.password)
    row = f'#my-videos tr[data-id="{video_id}"]'
    page.wait_for_selector(f'{row} .state[data-state="ready"]', timeout=30_000)
    assert page.text_content(f"{row} .title") == TITLE
    assert page.input_value(f"{row} .privacy") == "public"
    assert page.get_attribute("#to-upload", "href") == f"{pages.upload}/upload"
    page.screenshot(path=str(tmp_path / "my-videos.png"))

    # Edit it inline: title, description and tags saved together.
    manage = f'#my-videos tr.manage[data-for="{video_id}"]'
    page.click(f"{row} button.edit")
    assert page.input_value(f"{manage} .edit-title") == TITLE
    page.fill(f"{manage} .edit-title", RENAMED)
    page.fill(f"{manage} .edit-description", "shot on a test pattern")
    page.fill(f"{manage} .edit-tags", "tests, pages")
    page.click(f"{manage} button.save")
    page.wait_for_function(
        f"document.querySelector('{row} .title').textContent === {RENAMED!r}", timeout=15_000
    )
    details = httpx.get(f"{pages.origin}/api/videos/{video_id}", headers=owner.headers).json()
    assert (details["title"], details["description"], details["tags"]) == (
        RENAMED,
        "shot on a test pattern",
        ["tests", "pages"],
    )

    # Captions: uploaded, listed, deleted; a poster that is no image shows the server's refusal.
    page.fill(f"{manage} .caption-language", "en")
    page.set_input_files(
        f"{manage} .caption-file",
        {"name": "en.vtt", "mimeType": "text/vtt", "buffer": CAPTIONS.encode()},
    )
    page.click(f"{manage} button.caption-upload")
    page.wait_for_selector(f'{manage} .captions li[data-language="en"]', timeout=15_000)
    page.click(f'{manage} .captions li[data-language="en"] button.caption-delete')
    page.wait_for_selector(f"{manage} .captions li.none", timeout=15_000)
    page.set_input_files(
        f"{manage} .poster-file",
        {"name": "poster.png", "mimeType": "image/png", "buffer": b"not an image at all"},
    )
    page.wait_for_selector(f"{manage} .manage-status.error", timeout=15_000)
    assert (page.text_content(f"{manage} .manage-status") or "").startswith(
        "could not replace the poster: "
    )

    # Transcode it again: it plays its ladder meanwhile, then the new one.
    master_before = httpx.get(f"{pages.origin}/api/stream/{video_id}").json()["master_url"]
    page.click(f"{manage} button.retranscode")
    for said in ("re-transcoding", "last transcode finished"):
        page.wait_for_function(
            f"document.querySelector('{manage} .transcode-status').textContent"
            f".startsWith({said!r})",
            timeout=120_000,
        )
    master_after = httpx.get(f"{pages.origin}/api/stream/{video_id}").json()["master_url"]
    assert master_after.split("?")[0] != master_before.split("?")[0]
    page.screenshot(path=str(tmp_path / "my-videos-edit.png"))
    page.click(f"{row} button.edit")

    # Play it from there: the player on the same origin is signed in already.
    page.click(f"{row} a.play")
    page.wait_for_url(f"{pages.origin}/player?video={video_id}")
    assert page.text_content("#signed-in-as") == f"signed in as {owner.name}"
    wait_playing(page, 1)

    # Make it private on "my videos".
    page.goto(f"{pages.origin}/my")
    page.wait_for_selector(f'{row} .state[data-state="ready"]')
    page.select_option(f"{row} .privacy", "private")
    page.wait_for_function(
        "document.getElementById('my-status').textContent.endsWith('is now private')"
    )
    details = httpx.get(f"{pages.origin}/api/videos/{video_id}", headers=owner.headers)
    assert details.json()["privacy"] == "private"

    # A fresh anonymous browser: the stream API says 404 and the page says why it cannot play.
    stranger = new_page(browser, errors)
    answers = stream_answers(stranger, video_id)
    stranger.goto(f"{pages.origin}/player?video={video_id}")
    stranger.wait_for_function(
        f"document.getElementById('status').textContent.includes({HIDDEN!r})", timeout=30_000
    )
    assert answers == [404]
    assert stranger.evaluate("window.vspPlayer.video.currentTime") == 0
    stranger.wait_for_function(
        "/^\\d+ videos?$/.test(document.getElementById('catalog-status').textContent)"
    )
    assert RENAMED not in (stranger.text_content("#catalog") or "")
    assert httpx.get(f"{pages.origin}/api/stream/{video_id}").status_code == 404

    # Its owner still plays it.
    owned = stream_answers(page, video_id)
    page.goto(f"{pages.origin}/player?video={video_id}")
    wait_playing(page, 1)
    assert owned and owned[0] == 200
    page.screenshot(path=str(tmp_path / "player-signed-in.png"))
    stranger.screenshot(path=str(tmp_path / "player-anonymous.png"))
    print(f"screenshots of the pages: {tmp_path}")

    # And deletes it from "my videos", after a confirm.
    page.goto(f"{pages.origin}/my")
    page.wait_for_selector(row)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{row} button.delete")
    page.wait_for_selector(row, state="detached")
    assert (
        httpx.get(f"{pages.origin}/api/videos/{video_id}", headers=owner.headers).status_code == 404
    )
    assert not errors, errors


def test_a_wrong_password_is_shown_on_the_page(
    pages: Pages, browser: Browser, test_env: dict[str, str]
) -> None:
    # An account of its own: its failed sign-ins count against its name in every service.
    account = create_account(test_env)
    errors: list[str] = []
    page = new_page(browser, errors)
    for url in (f"{pages.upload}/upload", f"{pages.origin}/player", f"{pages.origin}/my"):
        page.goto(url)
        page.fill("#signin-name", account.name)
        page.fill("#signin-password", account.password + "-wrong")
        page.click("#signin-submit")
        page.wait_for_selector("#signin-error:not([hidden])")
        assert page.text_content("#signin-error") == (
            "Sign-in failed: wrong account name or password"
        )
        assert page.is_hidden("#signed-in-as")
        assert page.evaluate("window.sessionStorage.length") == 0
    assert not errors, errors


def test_a_refused_token_signs_the_pages_out(pages: Pages, browser: Browser) -> None:
    """A token the server no longer takes (here a forged one, kept as if it were still good)."""
    errors: list[str] = []
    page = new_page(browser, errors)
    page.add_init_script(
        """window.sessionStorage.setItem("vsp-sign-in", JSON.stringify(
            {token: "at1.forged", name: "someone", expiresAt: Date.now() + 3600000}))"""
    )
    for url in (f"{pages.origin}/my", f"{pages.origin}/player", f"{pages.upload}/upload"):
        page.goto(url)
        page.wait_for_selector("#signin-error:not([hidden])")
        assert "expired or is no longer valid" in (page.text_content("#signin-error") or "")
        assert page.is_visible("#signin-form")
        assert page.evaluate("window.sessionStorage.getItem('vsp-sign-in')") is None
    assert not errors, errors
