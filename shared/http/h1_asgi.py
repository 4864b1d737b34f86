"""ASGI in the process of an HTTP/1.1 kit front (``shared.http.h1``): requests and the lifespan.

A front hands the requests it does not answer itself to its app with ``answer_asgi``: the body
has been read whole (within the listener's limits) before the app runs, and an answer without a
Content-Length goes out chunked. ``Lifespan`` runs the app's startup before the front listens
and its shutdown after the front has drained.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote

import httptools

from shared.core.errors import AppError, BadRequest
from shared.http.h1 import Connection, Request, error_bytes, response_head

log = logging.getLogger(__name__)

_NO_BODY_STATUSES = frozenset({204, 304})
# Running answers: the loop keeps only weak references to tasks.
_running: set[asyncio.Task[None]] = set()


def _scope(conn: Connection, request: Request, state: dict[str, Any]) -> dict[str, Any] | None:
    """The ASGI scope, or None when the request target is not a URL."""
    try:
        url = httptools.parse_url(request.target)
    except httptools.HttpParserInvalidURLError:
        return None
    raw_path = url.path or b"/"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": conn.http_version(request),
        "server": conn.sockname,
        "client": conn.peer,
        "scheme": "http",
        "method": request.method.decode("ascii"),
        "root_path": "",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": url.query or b"",
        "headers": request.headers,
        "state": state.copy(),
    }


def answer_asgi(conn: Connection, app: Any, request: Request, state: dict[str, Any]) -> bool:
    """Start answering ``request`` with ``app``: what ``Connection.respond`` returns.

    ``state`` is the lifespan's state, copied into each request's scope.
    """
    scope = _scope(conn, request, state)
    if scope is None:
        request.keep_alive = False
        conn.write(error_bytes(BadRequest("the request target is not a URL"), conn.listener.date))
        return True
    task = asyncio.get_running_loop().create_task(_run(conn, app, request, scope))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return False


async def _run(conn: Connection, app: Any, request: Request, scope: dict[str, Any]) -> None:
    """Run the app for one request, write its answer, then hand the connection on."""
    date = conn.listener.date
    head_only = request.method == b"HEAD"
    state = {"body_sent": False, "started": False, "finished": False, "chunked": False}

    async def receive() -> dict[str, Any]:
        if not state["body_sent"]:
            state["body_sent"] = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await conn.lost()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if state["started"]:
                raise RuntimeError("http.response.start sent twice")
            state["started"] = True
            status = message["status"]
            headers = list(message.get("headers", []))
            if (
                not head_only
                and status >= 200
                and status not in _NO_BODY_STATUSES
                and all(name.lower() != b"content-length" for name, _ in headers)
            ):
                state["chunked"] = True
                headers.append((b"transfer-encoding", b"chunked"))
            conn.write(response_head(status, headers, date, request.keep_alive))
        elif message["type"] == "http.response.body":
            if not state["started"] or state["finished"]:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if state["chunked"]:
                if body:
                    conn.write(b"%x\r\n%s\r\n" % (len(body), body))
                if not more:
                    conn.write(b"0\r\n\r\n")
            elif body and not head_only:
                conn.write(body)
            state["finished"] = not more
            await conn.writable()

    try:
        await app(scope, receive, send)
    except Exception:
        log.exception("%s %s failed", scope["method"], scope["path"])
    if state["finished"]:
        conn.done(request.keep_alive)
        return
    if not state["started"]:
        conn.write(error_bytes(AppError("the request could not be answered"), date))
    conn.close()


class Lifespan:
    """Drives an app's ASGI lifespan: startup before serving, shutdown after."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._started: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Run the app's startup; raises if it fails."""
        loop = asyncio.get_running_loop()
        self._started, self._stopped = loop.create_future(), loop.create_future()
        self._task = loop.create_task(self._run())
        await self._started

    async def shutdown(self) -> None:
        """Run the app's shutdown and wait for the lifespan to end."""
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
