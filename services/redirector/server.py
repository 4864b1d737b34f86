"""The redirector's own HTTP/1.1 server: one process, one uvloop event loop, httptools parsing.

Redirects are answered in the parser callback (``services.redirector.protocol``); the FastAPI
app serves the rest and runs its lifespan here. Idle keep-alive connections are closed after
``KEEP_ALIVE_SECONDS``, longer than nginx keeps its idle upstream connections, so nginx is the
one that closes them; SIGTERM or SIGINT stops listening, lets running requests finish for up to
``SHUTDOWN_GRACE_SECONDS`` and then runs the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import uvloop

from services.redirector.protocol import Connection, Shared
from services.redirector.service import Redirector
from shared.runtime.servers import KEEP_ALIVE_SECONDS

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
SWEEP_SECONDS = 5.0


class Lifespan:
    """Drives the app's ASGI lifespan: startup before serving, shutdown after."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        self._task = loop.create_task(self._run())
        await self._started

    async def shutdown(self) -> None:
        self._stop.set()
        if self._stopped is not None:
            await self._stopped
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            for waiter in (self._started, self._stopped):
                if waiter is not None and not waiter.done():
                    waiter.set_exception(RuntimeError(f"the app's lifespan failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    async def _receive(self) -> dict[str, Any]:
        assert self._started is not None
        if not self._started.done():
            return {"type": "lifespan.startup"}
        await self._stop.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        waiter = self._started if kind.startswith("lifespan.startup") else self._stopped
        if waiter is None or waiter.done():
            return
        if kind.endswith(".failed"):
            waiter.set_exception(RuntimeError(message.get("message") or kind))
        else:
            waiter.set_result(None)


async def _sweep_idle(shared: Shared) -> None:
    """Close connections that had no request for longer than the keep-alive timeout."""
    limit = int(KEEP_ALIVE_SECONDS // SWEEP_SECONDS) + 1
    seen: dict[Connection, int] = {}
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        for conn in list(shared.connections):
            if conn.task is not None or seen.get(conn) != conn.requests:
                conn.idle_sweeps = 0
            else:
                conn.idle_sweeps += 1
                if conn.idle_sweeps >= limit:
                    conn.close()
        seen = {conn: conn.requests for conn in shared.connections}


async def _drain_connections(shared: Shared) -> None:
    """Close idle connections now, busy ones when their request is answered (or at the end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_GRACE_SECONDS
    while shared.connections and loop.time() < deadline:
        for conn in list(shared.connections):
            if conn.task is None:
                conn.close()
        await asyncio.sleep(0.05)
    for conn in list(shared.connections):
        conn.close()


class Running:
    """A started server: its port, and how to stop it."""

    def __init__(self, server: asyncio.Server, shared: Shared, lifespan: Lifespan) -> None:
        self.server = server
        self.shared = shared
        self.lifespan = lifespan
        self.port: int = server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.get_running_loop().create_task(_sweep_idle(shared))

    async def close(self) -> None:
        """Stop listening, let running requests finish, then run the lifespan shutdown."""
        self.server.close()
        self._sweeper.cancel()
        self.shared.stop_ticking()
        await _drain_connections(self.shared)
        await self.lifespan.shutdown()


async def start(app: Any, redirector: Redirector | None, *, host: str, port: int) -> Running:
    """Run the lifespan startup, then listen (port 0 picks a free one)."""
    lifespan = Lifespan(app)
    await lifespan.startup()
    shared = Shared(app, redirector, lifespan.state)
    shared.tick()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(shared), host, port, backlog=2048)
    return Running(server, shared, lifespan)


async def serve(app: Any, redirector: Redirector | None, *, host: str, port: int) -> None:
    """Serve ``app`` (and redirects from ``redirector``) until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = await start(app, redirector, host=host, port=port)
    log.info("redirector listening on http://%s:%s", host, running.port)
    try:
        await stop.wait()
    finally:
        await running.close()


def run(app: Any, redirector: Redirector | None, *, host: str, port: int) -> None:
    """Serve on a uvloop event loop in this process."""
    uvloop.run(serve(app, redirector, host=host, port=port))
