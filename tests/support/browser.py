"""Headless Chromium for the pages' tests, and the pages' sign-in form."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, Playwright

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


def sign_in_on(page: Page, name: str, password: str) -> None:
    """Sign in with the form a page shows (``/static/signin.js``) and wait until it took."""
    page.fill("#signin-name", name)
    page.fill("#signin-password", password)
    page.click("#signin-submit")
    page.wait_for_selector("#signed-in-as", timeout=15_000)
    assert page.text_content("#signed-in-as") == f"signed in as {name}"
