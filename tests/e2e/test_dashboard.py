"""Must show 3: headless Chromium opens /dashboard and sees live, non-zero charts within 5 s."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from tests.support.balancer import start_cluster
from tests.support.browser import launch_chromium
from tests.support.paths import ROOT
from tests.support.processes import Processes
from tests.support.signing import signed_path

SCREENSHOT = Path(ROOT) / "results" / "dashboard.png"

# True once the page has had two live updates and every per-backend chart holds a value > 0.
LIVE_AND_NON_ZERO = """() => {
  const d = window.vspDashboard;
  if (!d || d.updates < 2) return false;
  const nonZero = (chart) => chart.data.datasets.some((ds) => ds.data.some((v) => v > 0));
  return ["rate", "bandwidth", "response", "memory", "score", "distribution"]
    .every((key) => nonZero(d.charts[key]));
}"""


def test_dashboard_shows_live_charts(procs: Processes, tmp_path: Path) -> None:
    cluster = start_cluster(procs, 2, {"lb": {}})
    lb = cluster.balancers["lb"]
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00000.m4s"
    store_root = Path(procs.env["STORAGE_ROOT"])
    (store_root / key).parent.mkdir(parents=True, exist_ok=True)
    (store_root / key).write_bytes(b"\x00" * 200_000)
    stop = threading.Event()

    def viewers() -> None:
        with httpx.Client(base_url=lb, timeout=10) as client:
            while not stop.is_set():
                client.get(signed_path(key)).raise_for_status()

    load = threading.Thread(target=viewers, daemon=True)
    load.start()
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1200})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{lb}/dashboard")
                opened = time.monotonic()
                page.wait_for_function(LIVE_AND_NON_ZERO, timeout=5000, polling=100)
                live_after = time.monotonic() - opened
                rows = page.locator("#backends tbody tr")
                assert rows.count() == 2
                assert page.locator("#connection").inner_text() == "live"
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
                # And it stays live: another snapshot follows (one a second, when the machine
                # is not too busy to keep the beat).
                updates_then = page.evaluate("window.vspDashboard.updates")
                page.wait_for_function(
                    f"window.vspDashboard.updates > {updates_then}", timeout=15_000
                )
            finally:
                browser.close()
    finally:
        stop.set()
        load.join(timeout=15)
    assert not errors, errors
    assert live_after < 5
    assert SCREENSHOT.stat().st_size > 10_000
