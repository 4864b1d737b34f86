"""Free TCP ports for the processes of a test session (or a benchmark run)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path


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
