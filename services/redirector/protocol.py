"""One HTTP/1.1 connection of the redirector's own server: redirects inline, the rest in ASGI.

A redirect is answered inside the parser's callback: no task, no ASGI messages, no hand-off
between threads. With four instances and nginx sharing two cores, that per-request cost is what
decides the throughput (docs/BENCHMARKS.md). Any other request (configuration, metrics, health)
runs the FastAPI app as an ASGI request, one at a time per connection; requests pipelined behind
it wait their turn and reading pauses meanwhile, so answers leave in request order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from email.utils import formatdate
from typing import Any, NamedTuple, cast

import httptools

from services.redirector.asgi import Headers, redirect_reply
from services.redirector.exchange import run_asgi
from services.redirector.service import Redirector
from services.redirector.wire import error_bytes, head_bytes

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0


class Request(NamedTuple):
    method: bytes
    target: bytes
    headers: Headers
    body: bytes
    keep_alive: bool
    http_version: str


class TooLarge(Exception):
    """A request head or body over its limit, raised from a parser callback."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Shared:
    """What every connection of one server reads: the apps, the lifespan state, the date."""

    def __init__(self, app: Any, redirector: Redirector | None, state: dict[str, Any]) -> None:
        self.app = app
        # None sends redirects through the framework too (REDIRECTOR_FAST_PATH=false).
        self.redirector = redirector
        self.state = state
        self.connections: set[Connection] = set()
        self.date = b""
        self._ticker: asyncio.TimerHandle | None = None

    def tick(self) -> None:
        """Refresh the ``date:`` line now and every second."""
        self.date = b"date: %s\r\n" % formatdate(usegmt=True).encode()
        self._ticker = asyncio.get_running_loop().call_later(1.0, self.tick)

    def stop_ticking(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()


class Connection(asyncio.Protocol):
    """Parses requests with httptools; see the module docstring for who answers them."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.url = b""
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.size = 0
        self.body_size = 0
        # Requests waiting behind an ASGI one; bytes are a last answer before closing.
        self.pending: deque[Request | bytes] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.discarding = False
        self.reading = True
        self.write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        # Read by the idle sweep of services.redirector.server.
        self.requests = 0
        self.idle_sweeps = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.client = transport.get_extra_info("peername")
        self.server = transport.get_extra_info("sockname")
        self.shared.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.shared.connections.discard(self)
        for waiter in (self._lost, self._writable):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, TooLarge):
                self._last(cause.status, "request_too_large", cause.detail)
            else:
                log.error("request failed", exc_info=cause or exc)
                self._last(500, "internal_error", "the request could not be answered")
        except httptools.HttpParserUpgrade:
            # Answered as plain HTTP already; what follows is not HTTP.
            self._last(0, "", "")
        except httptools.HttpParserError as exc:
            self._last(400, "bad_request", f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._flow()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.size = 0
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.size += len(url)
        if self.size > MAX_HEAD_BYTES:
            raise TooLarge(431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.size += len(name) + len(value)
        if self.size > MAX_HEAD_BYTES:
            raise TooLarge(431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_size += len(body)
        if self.body_size > MAX_BODY_BYTES:
            raise TooLarge(413, f"the request body exceeds {MAX_BODY_BYTES} bytes")

    def on_message_complete(self) -> None:
        self.requests += 1
        parser = self.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        if self.task is None and self._redirect(method, self.url, self.headers, keep_alive):
            return
        body = b"".join(self.body)
        request = Request(
            method, self.url, self.headers, body, keep_alive, parser.get_http_version()
        )
        self.pending.append(request)
        self._work()

    # Answers

    def _redirect(self, method: bytes, target: bytes, headers: Headers, keep_alive: bool) -> bool:
        """Answer ``GET|HEAD /?video=...`` here and now; False for anything else."""
        redirector = self.shared.redirector
        if redirector is None or target[:2] != b"/?" or method not in (b"GET", b"HEAD"):
            return False
        client = self.client[0] if self.client else None
        reply = redirect_reply(redirector, target[2:], headers, client)
        if reply is None:
            return False
        status, reply_headers, body = reply
        assert self.transport is not None
        head = head_bytes(status, reply_headers, self.shared.date, keep_alive)
        self.transport.write(head if method == b"HEAD" else head + body)
        if not keep_alive:
            self.close()
        return True

    def _last(self, status: int, code: str, detail: str) -> None:
        """Answer with an error (none for status 0), then close once earlier answers are out."""
        answer = error_bytes(status, code, detail, self.shared.date) if status else b""
        self.pending.append(answer)
        self._work()

    def _work(self) -> None:
        if self.task is None and not self.closed:
            self.task = asyncio.get_running_loop().create_task(self._drain())
            self._flow()

    async def _drain(self) -> None:
        try:
            while self.pending and not self.closed:
                item = self.pending.popleft()
                if isinstance(item, bytes):
                    self.write(item)
                    self._linger()
                elif not self._redirect(item.method, item.target, item.headers, item.keep_alive):
                    await run_asgi(self, item)
        finally:
            self.task = None
            self._flow()

    # Used by the ASGI exchange too

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.pending.clear()
        if self.transport is not None:
            self.transport.close()

    def _linger(self) -> None:
        """Close after an error answer, without losing it.

        Closing a socket with unread input (the rest of a refused body) sends a reset, which can
        destroy the answer before the client reads it: end our side, drop what still arrives,
        and close when the client does or after ``LINGER_SECONDS``.
        """
        self.pending.clear()
        if self.transport is None or self.closed:
            return
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.discarding = True
        self.transport.write_eof()
        self._flow()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)

    async def writable(self) -> None:
        """Wait while the client is not reading what was written."""
        if self.write_paused and not self.closed:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    async def lost(self) -> None:
        """Wait until the client goes away."""
        if not self.closed:
            if self._lost is None:
                self._lost = asyncio.get_running_loop().create_future()
            await self._lost

    def _flow(self) -> None:
        """Read only while no ASGI request runs and the client takes what is written."""
        if self.closed or self.transport is None:
            return
        read = self.discarding or (self.task is None and not self.write_paused)
        if read != self.reading:
            self.reading = read
            if read:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()
