"""The redirector's HTTP/1.1 server: one process, one uvloop event loop, the shared h1 kit.

A redirect (``GET|HEAD /?video=...``) is answered inside the parser's callback: no task, no
ASGI messages, no hand-off between threads. With four instances and nginx sharing two cores,
that per-request cost is what decides the throughput (docs/BENCHMARKS.md). Every other request
(configuration, metrics, health) runs the FastAPI app in-process over ASGI; requests pipelined
behind it wait their turn, so answers leave in request order. Limits, deadlines, pipelining and
error answers are the kit's (``shared.http.h1``). SIGTERM or SIGINT stops listening, lets running
requests finish for up to ``SHUTDOWN_GRACE_SECONDS``, then runs the app's lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import uvloop

from services.redirector.reply import redirect_reply
from services.redirector.service import Redirector
from shared.http.h1 import Connection, Listener, Request, answer_bytes
from shared.http.h1_asgi import Lifespan, answer_asgi
from shared.http.h1_limits import Limits

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0


class RedirectConnection(Connection):
    """Redirects answered here and now; anything else goes to the app."""

    def __init__(
        self, listener: Listener, app: Any, redirector: Redirector | None, state: dict[str, Any]
    ) -> None:
        super().__init__(listener)
        self.app = app
        # None sends redirects through the framework too (REDIRECTOR_FAST_PATH=false).
        self.redirector = redirector
        self.state = state
        self.client_host: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.peer:
            self.client_host = self.peer[0]

    def respond(self, request: Request) -> bool:
        redirector = self.redirector
        target = request.target
        method = request.method
        if redirector is not None and target[:2] == b"/?" and method in (b"GET", b"HEAD"):
            reply = redirect_reply(redirector, target[2:], request.headers, self.client_host)
            if reply is not None:
                status, fields, body = reply
                if method == b"HEAD":
                    body = b""
                transport = self.transport
                assert transport is not None
                transport.write(
                    answer_bytes(status, fields, self.listener.date, request.keep_alive, body)
                )
                return True
        return answer_asgi(self, self.app, request, self.state)


class Running:
    """A started server: its port, and how to stop it."""

    def __init__(self, server: asyncio.Server, listener: Listener, lifespan: Lifespan) -> None:
        self.server = server
        self.listener = listener
        self.lifespan = lifespan
        self.port: int = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, let running requests finish, then run the lifespan shutdown."""
        self.server.close()
        await self.listener.drain(SHUTDOWN_GRACE_SECONDS)
        await self.lifespan.shutdown()


async def start(
    app: Any, redirector: Redirector | None, *, host: str, port: int, limits: Limits
) -> Running:
    """Run the lifespan startup, then listen (port 0 picks a free one)."""
    lifespan = Lifespan(app)
    await lifespan.startup()
    listener = Listener(limits)
    state = lifespan.state
    server = await listener.open(
        lambda: RedirectConnection(listener, app, redirector, state), host, port
    )
    return Running(server, listener, lifespan)


async def serve(
    app: Any, redirector: Redirector | None, *, host: str, port: int, limits: Limits
) -> None:
    """Serve ``app`` (and redirects from ``redirector``) until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = await start(app, redirector, host=host, port=port, limits=limits)
    log.info("redirector listening on http://%s:%s", host, running.port)
    try:
        await stop.wait()
    finally:
        await running.close()


def run(app: Any, redirector: Redirector | None, *, host: str, port: int, limits: Limits) -> None:
    """Serve on a uvloop event loop in this process."""
    uvloop.run(serve(app, redirector, host=host, port=port, limits=limits))
