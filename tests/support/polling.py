"""Waiting for something to become true: polled in a thread, or in the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tests.support.processes import Proc

T = TypeVar("T")


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Poll the async ``check`` until it returns something truthy, which is returned."""
    timeout = within
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


async def logged(proc: Proc, text: str, within: float = 15) -> str:
    """The process's log once it holds ``text``: a line logged just after a state change."""

    async def check() -> str | None:
        log = proc.log()
        return log if text in log else None

    return await eventually(check, within=within, what=f"{proc.name} to log {text!r}")
