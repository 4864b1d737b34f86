"""Real processes: our services by name, workers, and any other command.

Each process runs in a session of its own with its output in a log file; a start can wait until
the process answers over HTTP, failing with the log if it dies first; stopping one ends every
worker process it forked too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.paths import ROOT
from tests.support.ports import free_port

# The `vsp` command line, run by the interpreter of this session.
VSP = [sys.executable, "-m", "services.cli.main"]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""  # the base URL of what it serves, when it serves HTTP
    ready_url: str | None = None
    ready_statuses: Container[int] = (200,)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        """Wait until ``ready_url`` (when there is one) answers with a ready status."""
        if self.ready_url:
            wait_http(self.ready_url, timeout=timeout, proc=self, statuses=self.ready_statuses)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Ask the process to stop; kill its whole process group if it does not in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
        self._kill_group()  # server worker processes the parent left behind
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL to the process and every worker it forked, as a crash would."""
        self._kill_group()

    def pause(self) -> None:
        """SIGSTOP to the process and its workers: a process frozen mid-work (a stalled VM)."""
        os.killpg(self.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``: the process carries on as if no time had passed."""
        os.killpg(self.popen.pid, signal.SIGCONT)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class Processes:
    """Starts real processes, logging under ``log_dir``, and stops every one of them at the end.

    ``env`` is the whole environment of each process (a start may add to it); ``timeout`` is how
    long a start waits for the process to be ready unless told otherwise: patient, for a machine
    busy with other test runs.
    """

    def __init__(self, log_dir: Path, env: dict[str, str], *, timeout: float = 120) -> None:
        self.log_dir = log_dir
        self.env = env
        self.timeout = timeout
        self.started: list[Proc] = []

    def start(
        self,
        name: str,
        args: list[str],
        *,
        ready_url: str | None = None,
        ready_statuses: Container[int] = (200,),
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        wait: bool = True,
    ) -> Proc:
        """Start ``args`` (from the repository root).

        With ``ready_url`` and ``wait``, return once that URL answers with one of
        ``ready_statuses``; without ``wait``, the caller waits later (``wait_ready``), so that
        several processes start together.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path, ready_url=ready_url, ready_statuses=ready_statuses)
        self.started.append(proc)
        if wait:
            proc.wait_ready(self.timeout if timeout is None else timeout)
        return proc

    def service(
        self,
        name: str,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float | None = None,
        wait: bool = True,
    ) -> Proc:
        """``vsp serve NAME`` on ``port`` or a free one, ready at /readyz."""
        port = port or free_port()
        args = [*VSP, "serve", name, "--port", str(port)]
        return self._listening(name, args, port, "/readyz", env, timeout, wait)

    def worker(
        self,
        mode: str = "push",
        *,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        wait: bool = True,
    ) -> Proc:
        """``vsp worker --mode MODE`` with its metrics on a free port, ready once they answer."""
        port = free_port()
        args = [*VSP, "worker", "--mode", mode, "--metrics-port", str(port)]
        return self._listening(f"worker-{mode}", args, port, "/metrics", env, timeout, wait)

    def _listening(
        self,
        name: str,
        args: list[str],
        port: int,
        ready_path: str,
        env: dict[str, str] | None,
        timeout: float | None,
        wait: bool,
    ) -> Proc:
        """Start ``args``, which serves HTTP on ``port``; ``proc.url`` is its base URL."""
        url = f"http://127.0.0.1:{port}"
        proc = self.start(
            name, args, ready_url=url + ready_path, env=env, timeout=timeout, wait=wait
        )
        proc.url = url
        return proc

    def wait_ready(self, procs: Iterable[Proc], timeout: float | None = None) -> None:
        """Wait for each of ``procs`` (started without waiting) to be ready."""
        for proc in procs:
            proc.wait_ready(self.timeout if timeout is None else timeout)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop(timeout=10)


def wait_http(
    url: str,
    *,
    timeout: float = 30,
    proc: Proc | subprocess.Popen[bytes] | None = None,
    statuses: Container[int] = (200,),
) -> None:
    """Wait until ``url`` answers with one of ``statuses``; fail at once if ``proc`` exits first
    (with its log, when it keeps one)."""
    popen = proc.popen if isinstance(proc, Proc) else proc
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            name, log = (proc.name, proc.log()) if isinstance(proc, Proc) else (url, "")
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{log}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code in statuses:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    tail = proc.log()[-3000:] if isinstance(proc, Proc) else ""
    raise TimeoutError(f"{url} not ready after {timeout} s ({last})\n{tail}")
