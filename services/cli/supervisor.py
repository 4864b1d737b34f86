"""The children of ``vsp up``: each started in a session of its own with its output in a log,
restarted with a growing delay when it exits (as compose's restart policy and Kubernetes do),
and stopped together.

A child that exits waits ``backoff`` seconds, then twice that for each further exit in a row, up
to ``backoff_max``; once it has stayed up for ``reset`` seconds its next exit waits ``backoff``
again. Its whole session is killed first, so server workers it forked cannot keep its port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def say(message: str) -> None:
    print(f"vsp up: {message}", flush=True)


@dataclass
class Child:
    name: str
    args: list[str]
    ready_url: str | None
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # monotonic
    exits: int = 0  # exits in a row, none of them after staying up for the reset time
    restart_at: float | None = None  # monotonic; set while an exited child waits to restart


def start(child: Child, env: dict[str, str]) -> None:
    """Start ``child`` in a session of its own, appending its output to its log."""
    child.log_path.parent.mkdir(parents=True, exist_ok=True)
    with child.log_path.open("ab") as log:
        child.proc = subprocess.Popen(
            child.args,
            env={**env, **child.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    child.started_at = time.monotonic()


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole session: the server workers it forked go with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_all(children: list[Child], grace_seconds: float = 10) -> None:
    """SIGTERM every running child; kill the session of any still running after the grace."""
    running = [c for c in children if c.proc and c.proc.poll() is None]
    for child in running:
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(child.proc)
    if running:
        say(f"stopped {len(running)} process(es)")


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def describe_exit(code: int) -> str:
    """``code 1`` or ``signal SIGKILL``, as a person reads an exit status."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


class Supervisor:
    """Watches started children from a thread of its own and restarts those that exit."""

    def __init__(
        self,
        children: list[Child],
        env: dict[str, str],
        *,
        backoff: float,
        backoff_max: float,
        reset: float,
        interval: float = 0.5,
    ) -> None:
        self.children = children
        self.env = env
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.reset = reset
        self.interval = interval
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin watching."""
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def add(self, child: Child) -> None:
        """Start one more child and watch it too."""
        with self._lock:
            if self._stopping.is_set():
                return
            start(child, self.env)
            self.children.append(child)

    def stop(self, grace_seconds: float = 10) -> None:
        """Stop watching, then stop every child."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            stop_all(self.children, grace_seconds)

    def _watch(self) -> None:
        while not self._stopping.wait(self.interval):
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for child in self.children:
                    try:
                        self._check(child, now)
                    except OSError as exc:  # it could not be started: try again later
                        child.restart_at = now + self.backoff_max
                        wait = f"{self.backoff_max:g} s"
                        say(f"{child.name} could not start ({exc}); trying again in {wait}")

    def _check(self, child: Child, now: float) -> None:
        assert child.proc is not None
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                start(child, self.env)
                say(f"{child.name} restarted (pid {child.proc.pid})")
            return
        code = child.proc.poll()
        if code is None:
            if child.exits and now - child.started_at >= self.reset:
                child.exits = 0
            return
        pid = child.proc.pid
        kill_group(child.proc)
        delay = min(self.backoff * 2**child.exits, self.backoff_max)
        child.exits += 1
        child.restart_at = now + delay
        at = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
        say(
            f"{child.name} (pid {pid}) exited with {describe_exit(code)}; "
            f"restarting it in {delay:g} s, at {at} (exit {child.exits} in a row)"
        )
        if code > 0:
            print(tail(child.log_path), flush=True)
