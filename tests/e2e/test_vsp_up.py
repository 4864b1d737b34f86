"""`vsp up` (what `make up` runs) brings the whole suite up, plays a demo, restarts a child that
dies, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from tests.support.polling import wait_for
from tests.support.vsp_up import VspUp, suite_env


def test_vsp_up_prints_a_playable_signed_url(test_env: dict[str, str], tmp_path: Path) -> None:
    ports = suite_env()
    env = {**test_env, **ports, "STORAGE_ROOT": str(tmp_path / "o")}
    started = time.monotonic()
    suite = VspUp.start(env, tmp_path / "run")
    try:
        url = suite.wait_line(r"Signed master URL: (\S+)", timeout=120)[1]
        elapsed = time.monotonic() - started
        assert elapsed < 120, f"took {elapsed:.0f} s"
        # The demo uploader it printed signs in, and its API key works.
        origin = f"http://127.0.0.1:{ports['ORIGIN_PORT']}"
        name = suite.wait_line(r"Sign in as: +(\S+)", timeout=1)[1]
        password = suite.wait_line(r"Password: +(\S+)", timeout=1)[1]
        key = suite.wait_line(r"API key: +(vsp_\S+)", timeout=1)[1]
        login = httpx.post(
            f"{origin}/api/auth/token", data={"username": name, "password": password}, timeout=10
        )
        assert login.status_code == 200, login.text
        me = httpx.get(f"{origin}/api/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert me.json()["name"] == name == "demo"
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", url, "-map", "0", "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert decoded.returncode == 0, decoded.stderr
        # The front door serves the player over HTTP/2 on its self-signed certificate, and its
        # redirectors send the CDN side to the suite's edges.
        front = suite.wait_line(r"Front door: +(https://\S+)/", timeout=1)[1]
        with httpx.Client(http2=True, verify=False, timeout=10) as client:
            home = client.get(f"{front}/")
            assert (home.status_code, home.http_version) == (200, "HTTP/2")
            assert "<video" in home.text
            # Four redirectors each send one in five of theirs to the origin (nginx's workers
            # spread requests over them, so the split of 20 is near 4 and 16, not exact).
            cdn = [client.get(f"{front}/r/", params={"video": url}) for _ in range(20)]
            relative = url.removeprefix(origin)
            locations = [r.headers["location"] for r in cdn]
            assert set(locations) == {url, relative}
            assert locations.count(relative) >= 12, locations
            played = client.get(f"{front}{relative}")
            assert played.status_code == 200 and "x-cache" in played.headers
        children = psutil.Process(suite.popen.pid).children(recursive=True)
        assert len(children) >= 4
    finally:
        returncode = suite.stop()
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert returncode == 0


def test_a_child_that_dies_is_restarted_and_the_others_keep_running(
    test_env: dict[str, str], tmp_path: Path
) -> None:
    ports = suite_env()
    edge_url = f"http://127.0.0.1:{json.loads(ports['EDGE_PORTS'])[0]}"
    env = {**test_env, **ports, "STORAGE_ROOT": str(tmp_path / "o")}
    suite = VspUp.start(env, tmp_path / "run", "--no-demo")
    try:
        suite.wait_line(r"running; ", timeout=90)
        before = suite.pids()
        victims = {"edge-1", "worker-pull"}
        assert victims <= set(before), suite.output()
        # A crash: the child and every process it forked, with no chance to clean up.
        for name in victims:
            os.killpg(before[name], signal.SIGKILL)
        for name in victims:
            exited = suite.wait_line(
                rf"{name} \(pid {before[name]}\) exited with signal SIGKILL; "
                r"restarting it in ([\d.]+) s, at \d\d:\d\d:\d\d",
                timeout=15,
            )
            assert float(exited[1]) == 1
            suite.wait_line(rf"{name} restarted \(pid (\d+)\)", timeout=15)
        after = suite.pids()
        assert all(after[name] != before[name] for name in victims)
        wait_for(
            lambda: _answers(f"{edge_url}/readyz"), timeout=45, what="the new edge-1 to be ready"
        )
        for name, pid in before.items():
            if name not in victims:
                assert after[name] == pid, f"{name} was restarted too:\n{suite.output()}"
                assert psutil.pid_exists(pid), f"{name} is gone:\n{suite.output()}"
        assert suite.popen.poll() is None
        children = psutil.Process(suite.popen.pid).children(recursive=True)
    finally:
        returncode = suite.stop()
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert returncode == 0, suite.output()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
