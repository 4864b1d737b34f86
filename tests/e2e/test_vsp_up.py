"""`vsp up` (what `make up` runs) brings the whole suite up, plays a demo, and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from services.cli.up import SuiteSettings
from tests.support.paths import ROOT
from tests.support.ports import free_port


def _port_env() -> dict[str, str]:
    """A free port for every port setting of the suite, so a running suite is not disturbed."""
    env = {}
    for name, field in SuiteSettings.model_fields.items():
        if name.endswith("_port"):
            env[name.upper()] = str(free_port())
        elif name.endswith("_ports"):
            count = len(field.default)
            env[name.upper()] = json.dumps([free_port() for _ in range(count)])
    return env


def test_vsp_up_prints_a_playable_signed_url(test_env: dict[str, str], tmp_path: Path) -> None:
    env = {**test_env, **_port_env(), "PYTHONUNBUFFERED": "1", "STORAGE_ROOT": str(tmp_path / "o")}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "up", "--run-dir", str(tmp_path / "run")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    url = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = re.match(r"Signed master URL: (\S+)", line)
            if match:
                url = match.group(1)
                break
            if time.monotonic() - started > 120:
                break
        elapsed = time.monotonic() - started
        assert url, "".join(output)
        assert elapsed < 120, f"took {elapsed:.0f} s"
        decoded = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", url, "-map", "0", "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert decoded.returncode == 0, decoded.stderr
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4
    finally:
        os.killpg(proc.pid, signal.SIGINT) if proc.poll() is None else None
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert proc.returncode == 0
