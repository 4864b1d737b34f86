"""Helpers the tests share: free ports, media clips made by ffmpeg, real service processes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Playwright

from shared.media.samples import synthetic_clip as make_clip

__all__ = ["make_clip"]

ROOT = Path(__file__).resolve().parent.parent
VSP = [sys.executable, "-m", "services.cli.main"]


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


def _port_range() -> range:
    """Where test ports come from: below the kernel's ephemeral range when there is room.

    A port the kernel hands out for ``bind(0)`` is ephemeral: until the service that was told
    to use it binds it, the kernel may give the same port to any outgoing connection (of this
    session, another test run on the machine, or anything else), and the service then fails
    to start. Ports below the ephemeral range are never handed out that way.
    """
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(x) for x in text.split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - 10000 >= 4000:
        return range(10000, low)
    if 65535 - high >= 4000:
        return range(high + 1, 65536)
    return range(0)


_PORTS = _port_range()
_PORT_LOCKS = Path(tempfile.gettempdir()) / "vsp-test-ports"
_held_ports: dict[int, int] = {}  # port -> descriptor of its lock file, kept open


def free_port() -> int:
    """A TCP port nobody listens on, reserved for this test session until it ends.

    Each port is claimed with an exclusive lock on a file of its own, held until this process
    exits, so that neither this session nor a concurrent one on the same machine hands it out
    twice; a port can then be bound later (or bound again after a restart) without a race.
    """
    if not _PORTS:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    if not _PORT_LOCKS.is_dir():
        _PORT_LOCKS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            _PORT_LOCKS.chmod(0o1777)  # shared by every user's test runs, like /tmp
    for _ in range(500):
        port = random.choice(_PORTS)
        if port in _held_ports:
            continue
        fd = os.open(_PORT_LOCKS / f"{port}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if _bindable(port):
            _held_ports[port] = fd
            return port
        os.close(fd)  # in use by something outside the tests: leave it
    raise RuntimeError(f"no free port in {_PORTS}")


def _bindable(port: int) -> bool:
    # Without SO_REUSEADDR: a port any socket still holds (a wildcard listener included) fails.
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class Processes:
    """Starts real processes and stops every one of them at teardown."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.started: list[Proc] = []

    def start(
        self,
        name: str,
        args: list[str],
        *,
        ready_url: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 90,
    ) -> Proc:
        """Start ``args``; when ``ready_url`` is given, wait until it answers 200."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, popen, log_path)
        self.started.append(proc)
        if ready_url:
            wait_http(ready_url, timeout=timeout, proc=proc)
        return proc

    def service(
        self, name: str, *, env: dict[str, str] | None = None, port: int | None = None
    ) -> Proc:
        """``vsp serve NAME`` on a free port; ``proc.url`` is its base URL."""
        port = port or free_port()
        proc = self.start(
            name,
            [*VSP, "serve", name, "--port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/readyz",
            env=env,
        )
        proc.url = f"http://127.0.0.1:{port}"
        return proc

    def worker(self, mode: str = "push", *, env: dict[str, str] | None = None) -> Proc:
        """``vsp worker --mode MODE`` with its metrics on a free port."""
        port = free_port()
        proc = self.start(
            f"worker-{mode}",
            [*VSP, "worker", "--mode", mode, "--metrics-port", str(port)],
            ready_url=f"http://127.0.0.1:{port}/metrics",
            env=env,
        )
        proc.url = f"http://127.0.0.1:{port}"
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop(timeout=10)


def wait_http(url: str, *, timeout: float = 30, proc: Proc | None = None) -> None:
    """Wait until ``url`` answers 200; fail with the process's log if it dies first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    tail = proc.log()[-3000:] if proc else ""
    raise TimeoutError(f"{url} not ready after {timeout} s ({last})\n{tail}")


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def delete_topology(connection: Any, topology: Any) -> None:
    """Delete every queue and exchange of ``topology`` (the messages they hold go with them)."""
    channel = await connection.channel()
    try:
        levels = range(1, len(topology.retry_delays_seconds) + 1)
        for queue in [topology.jobs_queue, topology.dead_queue]:
            await channel.queue_delete(queue)
        for queue in (topology.retry_queue(level) for level in levels):
            await channel.queue_delete(queue)
        for exchange in (
            topology.jobs_exchange,
            topology.retry_exchange,
            topology.dead_exchange,
            topology.events_exchange,
        ):
            await channel.exchange_delete(exchange)
    finally:
        await channel.close()


async def drop_topology(prefix: str, retry_levels: int = 3) -> None:
    """Delete the queues and exchanges a broker declares for ``prefix``."""
    import aio_pika

    from shared.mq.topology import Topology

    connection = await aio_pika.connect(AMQP_URL)
    try:
        await delete_topology(connection, Topology(prefix, (1,) * retry_levels))
    finally:
        await connection.close()


@contextmanager
def private_queues(name: str) -> Iterator[dict[str, str]]:
    """Environment that gives services a broker topology of their own, deleted afterwards.

    For services that queue transcode jobs in a test that runs no worker: their jobs stay off
    the session's queue, where the worker of a later test would otherwise pick them up first.
    """
    prefix = f"{os.environ.get('MQ_PREFIX', 'vsp')}-{name}"
    try:
        yield {"MQ_PREFIX": prefix}
    finally:
        asyncio.run(drop_topology(prefix))


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
