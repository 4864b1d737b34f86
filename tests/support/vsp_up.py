"""``vsp up`` as a real process: its output read line by line, its children by name and pid.

``suite_env`` gives a suite ports of its own (and whatever else the caller adds), so that it
never meets another suite on the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.up import SuiteSettings
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.ports import free_port

_STARTED = re.compile(r"vsp up: (\S+) (?:is ready|restarted) \(pid (\d+)\)")
_READY = re.compile(r"vsp up: (\S+) is ready \(pid \d+\): (\S+)")


def suite_env() -> dict[str, str]:
    """A free port for every port setting of the suite."""
    env = {}
    for name, setting in SuiteSettings.model_fields.items():
        if name.endswith("_port"):
            env[name.upper()] = str(free_port())
        elif name.endswith("_ports"):
            count = len(setting.default)
            env[name.upper()] = json.dumps([free_port() for _ in range(count)])
    return env


@dataclass
class VspUp:
    """A running ``vsp up``; ``lines`` fills as it prints."""

    popen: subprocess.Popen[str]
    run_dir: Path
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, env: dict[str, str], run_dir: Path, *args: str) -> VspUp:
        """``vsp up --run-dir RUN_DIR ARGS`` with ``env`` as its whole environment."""
        popen = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "up", "--run-dir", str(run_dir), *args],
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        suite = cls(popen, run_dir)
        threading.Thread(target=suite._read, name="vsp-up-output", daemon=True).start()
        return suite

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line matching ``pattern``, once printed; fails early if ``vsp up`` exits."""

        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.popen.poll() is not None:
                raise RuntimeError(f"vsp up exited with {self.popen.returncode}:\n{self.output()}")
            return None

        try:
            return wait_for(found, timeout=timeout, what=f"vsp up to print {pattern!r}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; it printed:\n{self.output()}") from None

    def pids(self) -> dict[str, int]:
        """The latest pid of each child, as ``vsp up`` reported it."""
        return {m[1]: int(m[2]) for m in map(_STARTED.search, list(self.lines)) if m}

    def ready_urls(self) -> dict[str, str]:
        """The URL that answers 200 when each child is ready, as ``vsp up`` reported it."""
        return {m[1]: m[2] for m in map(_READY.search, list(self.lines)) if m}

    def stop(self, timeout: float = 30) -> int:
        """Ctrl-C, as in a terminal; the whole session is killed if it does not stop in time."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            raise
