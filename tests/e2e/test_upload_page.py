"""The browser upload page: headless Chromium signs in (or takes an API key), uploads with
tus-js-client and sees "ready" through the progress events it reads with its token."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from shared.core import ports
from tests.support.accounts import Account
from tests.support.browser import launch_chromium, sign_in_on
from tests.support.media import make_clip
from tests.support.ports import free_port
from tests.support.processes import Processes


@pytest.mark.parametrize("site", ["same", "other"])
def test_chromium_uploads_through_the_page_and_sees_ready(
    procs: Processes, media_dir: Path, site: str, account: Account
) -> None:
    port = free_port()
    # The page sends only to its own origin or to an endpoint the server lists in it.
    listed = json.dumps([f"http://127.0.0.1:{port}/files/"])
    service = procs.service(
        "chunked_upload", port=port, env={"CHUNKED_UPLOAD_PAGE_ENDPOINTS": listed}
    )
    procs.worker("push")
    page_url = f"{service.url}/upload"
    if site == "other":
        # The page from http://localhost:PORT sends to http://127.0.0.1:PORT: another origin,
        # so the upload and its events only work if the service answers CORS as browsers want.
        page_url = (
            f"{service.url.replace('127.0.0.1', 'localhost')}/upload?endpoint={service.url}/files/"
        )
    clip = make_clip(media_dir / "page-clip.mp4", seconds=2, size="320x180")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_url)
            assert page.is_hidden("#form")  # nothing to upload with before signing in
            if site == "same":
                sign_in_on(page, account.name, account.password)
            else:
                page.click("#account summary")
                page.fill("#signin-key", account.api_key)
                page.click("#signin-key-submit")
                page.wait_for_selector("#signed-in-as")
            assert page.is_visible("#form")
            # Without PUBLIC_ORIGIN_URL the links go to the origin's port on the page's host.
            host = "127.0.0.1" if site == "same" else "localhost"
            assert page.get_attribute("#to-my", "href") == f"http://{host}:{ports.ORIGIN}/my"
            page.set_input_files("#file", str(clip))
            page.fill("#title", "From Chromium")
            page.click("#start")
            page.wait_for_function(
                "document.getElementById('status').textContent === 'done'", timeout=60_000
            )
            assert page.eval_on_selector("#bar", "e => e.value") == 100
            page.wait_for_function(
                "document.getElementById('state').textContent === 'ready'", timeout=180_000
            )
            video_id = page.text_content("#video-id")
            assert not errors, errors
            assert page.is_hidden("#notice")
        finally:
            browser.close()
    video = httpx.get(f"{service.url}/api/videos/{video_id}").json()
    assert video["state"] == "ready" and video["title"] == "From Chromium"
    assert video["filename"] == "page-clip.mp4" and video["size_bytes"] == clip.stat().st_size
    assert video["owner_id"] == str(account.user_id) and video["privacy"] == "public"
