"""Headless Chromium for the pages' tests, and the pages' sign-in form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, headless, as root on a machine with no GPU and no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def launch_chromium(playwright: Playwright, *extra_args: str) -> Browser:
    """Headless Debian Chromium (a test tool's own browser download does not work here)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """``launch_chromium`` in a Playwright session of its own, closed on leaving."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, *extra_args)
        try:
            yield browser
        finally:
            browser.close()


def sign_in_on(page: Page, name: str, password: str) -> None:
    """Sign in with the form a page shows (``/static/signin.js``) and wait until it took."""
    page.fill("#signin-name", name)
    page.fill("#signin-password", password)
    page.click("#signin-submit")
    page.wait_for_selector("#signed-in-as", timeout=15_000)
    assert page.text_content("#signed-in-as") == f"signed in as {name}"


def upload_with_page(page: Page, clip: Path, title: str, *, timeout_ms: float) -> str:
    """Upload ``clip`` with the upload page open in ``page`` and follow it until the video is
    ready; the video's id. Fails with what the page shows when it is not ready in time."""
    page.set_input_files("#file", str(clip))
    page.fill("#title", title)
    page.click("#start")
    try:
        page.wait_for_function(
            "document.getElementById('state').textContent === 'ready'", timeout=timeout_ms
        )
    except PlaywrightTimeout:
        raise AssertionError(
            f"upload {page.text_content('#status')!r}, video {page.text_content('#video-id')!r} "
            f"is {page.text_content('#state')!r}"
        ) from None
    video_id = page.text_content("#video-id") or ""
    assert video_id, "the page names no video"
    return video_id
