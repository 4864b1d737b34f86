"""Run ffmpeg and ffprobe as children that can always be stopped.

Each runs in a process group of its own, so a kill reaches anything it started, and dies with
the process that started it (``PR_SET_PDEATHSIG``, Linux): a worker killed with SIGKILL cannot
stop its ffmpeg itself. stderr is kept only as its last bytes, since a hostile file can make a
decoder complain without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass

STDERR_TAIL_BYTES = 64 * 1024

_PR_SET_PDEATHSIG = 1
# Loaded up front: the child runs the preexec hook between fork and exec, where loading a
# library could deadlock on a lock another thread held at fork time.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def start(args: list[str]) -> asyncio.subprocess.Process:
    """Start a tool with stdout and stderr piped and no stdin."""
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the tool's whole process group, then reap the tool."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def read_tail(stream: asyncio.StreamReader, limit: int = STDERR_TAIL_BYTES) -> bytes:
    """Read ``stream`` to its end, keeping only its last ``limit`` bytes."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk
        if len(kept) > limit:
            del kept[:-limit]
    return bytes(kept)


@dataclass(frozen=True)
class Finished:
    """How a tool run to its end went: exit code, its whole stdout, the tail of its stderr."""

    returncode: int
    stdout: bytes
    stderr: str


async def run_to_end(args: list[str], timeout_seconds: float) -> Finished:
    """Run a tool until it exits; TimeoutError (the tool killed) after ``timeout_seconds``."""
    proc = await start(args)
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(read_tail(proc.stderr))
    try:
        async with asyncio.timeout(timeout_seconds):
            out = await proc.stdout.read()
            await proc.wait()
    finally:
        await kill(proc)
        err = (await stderr).decode(errors="replace").strip()
    return Finished(proc.returncode or 0, out, err)


def exit_words(returncode: int) -> str:
    """How a tool ended, in words fit for a user: ``exit 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"
