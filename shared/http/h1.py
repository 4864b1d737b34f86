"""An HTTP/1.1 server connection on httptools, for fronts that answer their hot path inline.

A front subclasses ``Connection`` and writes ``respond``. It is called from the parser's
``on_message_complete`` for a request with nothing ahead of it, so a hot answer costs no task
and no copy of the request; a request pipelined behind an answer still under way waits in a
queue and is handed over, in order, once ``done`` ends the one before. ``respond`` returns True
when it has written the whole answer, False when the answer is under way (a task, an upstream
exchange) and ``done`` will follow.

Around that callback the kit applies the listener's ``Limits``: the request target (414), the
number and size of header fields (431), the body (413, at once for a Content-Length over the
limit), the time to send a head (408), the keep-alive idle time and the time a client may leave
an answer untaken (then it is cut off). It pauses reading while the client does not take what
is written or ``pipeline_depth`` requests wait, and answers errors with the platform's JSON
error body before closing. What one listener shares (its connections, a coarse clock, the
``date:`` line, the sweep that applies the deadlines) is ``Listener``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

from shared.core.errors import (
    AppError,
    BadRequest,
    HeadersTooLarge,
    PayloadTooLarge,
    RequestTimeout,
    UriTooLong,
)
from shared.http.errors import error_body
from shared.http.h1_limits import Limits

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# After an error answer the client's unread input is read and dropped this long before closing.
LINGER_SECONDS = 2.0

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_JSON_LENGTH = b"content-type: application/json\r\ncontent-length: "
_CLOSE = b"connection: close\r\n"
_END = b"\r\n"
_CLOSE_END = _CLOSE + _END
# SO_LINGER on, for no time: a close resets the connection.
_LINGER_NONE = struct.pack("ii", 1, 0)
# Parser phases of a connection: between requests, in a request's head, in its body.
_BETWEEN, _HEAD, _BODY = 0, 1, 2


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>`` and its line end."""
    line = STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def response_head(
    status: int, headers: Iterable[tuple[bytes, bytes]], date: bytes, keep_alive: bool
) -> bytes:
    """Status line and header block of an answer; ``date`` is a whole ``date:`` line or empty."""
    lines = [status_line(status), date]
    lines += [b"%s: %s\r\n" % pair for pair in headers]
    if not keep_alive:
        lines.append(_CLOSE)
    lines.append(b"\r\n")
    return b"".join(lines)


def answer_bytes(status: int, fields: bytes, date: bytes, keep_alive: bool, body: bytes) -> bytes:
    """A whole answer from header lines rendered beforehand (``name: value\\r\\n`` each)."""
    line = STATUS_LINES.get(status) or status_line(status)
    return b"".join((line, date, fields, _END if keep_alive else _CLOSE_END, body))


def error_bytes(
    exc: AppError,
    date: bytes = b"",
    *,
    keep_alive: bool = False,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole JSON answer for ``exc``: its status and headers, the body every service sends."""
    body = error_body(exc)
    lines = [status_line(exc.status), date, _JSON_LENGTH, b"%d\r\n" % len(body)]
    lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in exc.headers.items()]
    lines += [b"%s: %s\r\n" % pair for pair in headers]
    if not keep_alive:
        lines.append(_CLOSE)
    lines += [b"\r\n", body]
    return b"".join(lines)


def declared_length(value: bytes) -> int:
    """A Content-Length value as a number (0 when malformed: the parser refuses it itself)."""
    digits = value.strip().lstrip(b"0")
    if not digits.isdigit():
        return 0
    # Past 18 digits it is over any limit, and int() of it need not be paid for.
    return int(digits) if len(digits) <= 18 else 10**18


class Request:
    """One parsed request: header names lower-cased, the body whole."""

    __slots__ = ("body", "headers", "keep_alive", "method", "target", "upgrade", "version")

    method: bytes
    target: bytes
    headers: Headers
    body: bytes
    keep_alive: bool
    # It asks to switch protocols (``Upgrade``); the connection then calls ``upgraded``.
    upgrade: bool
    # Empty until asked for: see ``Connection.http_version``.
    version: str


_new_request = object.__new__
# What a connection that has not begun a request yet holds as its current one.
_NO_REQUEST = _new_request(Request)


class Listener:
    """The connections of one listening socket: their limits, clock, ``date:`` line and sweep."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.connections: set[Connection] = set()
        # The loop's clock at the last tick: what deadlines are measured with.
        self.now = 0.0
        self.date = b""
        self.stopping = False
        shortest = min(
            limits.header_timeout_seconds, limits.keep_alive_seconds, limits.send_timeout_seconds
        )
        self.tick_seconds = min(1.0, max(0.01, shortest / 4))
        # A phase's start is stamped with the clock of the last tick, up to a tick early: a
        # deadline is then never met before its time, and at most two ticks after.
        self._head_seconds = limits.header_timeout_seconds + self.tick_seconds
        self._idle_seconds = limits.keep_alive_seconds + self.tick_seconds
        self._send_seconds = limits.send_timeout_seconds + self.tick_seconds
        self._second = 0
        self._ticker: asyncio.TimerHandle | None = None

    async def open(
        self, protocol: Callable[[], Connection], host: str, port: int, *, backlog: int = 2048
    ) -> asyncio.Server:
        """Listen on ``host:port`` (port 0 picks a free one) and start the clock."""
        # The clock runs before the first connection can be accepted: deadlines start on it.
        self.start()
        loop = asyncio.get_running_loop()
        try:
            return await loop.create_server(
                protocol, host, port, backlog=backlog, reuse_address=True
            )
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        """Start the clock, the ``date:`` line and the deadlines in the running loop."""
        if self._ticker is None:
            self._tick()

    def stop(self) -> None:
        """Stop the clock and the deadlines."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self.tick_seconds, self._tick)
        self.now = loop.time()
        second = int(time.time())
        if second != self._second:
            self._second = second
            self.date = b"date: %s\r\n" % formatdate(second, usegmt=True).encode()
        self.sweep()

    def sweep(self) -> None:
        """Answer 408 to requests sent too slowly; close connections idle too long; cut off
        clients that take nothing of what is written."""
        now, head_seconds = self.now, self._head_seconds
        for conn in list(self.connections):
            if conn.writing_paused and now - conn.paused_at > self._send_seconds:
                conn.reset()
                continue
            if conn.busy:
                continue
            age = now - conn.since
            if conn.phase != _BETWEEN:
                if age > head_seconds:
                    conn.refuse(RequestTimeout("the request was not sent in time"))
            elif conn.request is _NO_REQUEST:
                # Nothing sent since connecting: no request to answer.
                if age > head_seconds:
                    conn.close()
            elif age > self._idle_seconds:
                conn.close()

    def close_idle(self) -> None:
        """Close every connection with no answer under way."""
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()

    async def drain(self, grace: float) -> None:
        """Close idle connections now, busy ones once answered, and all after ``grace`` s."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            self.close_idle()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        self.stop()


class Connection(asyncio.Protocol):
    """One client connection; see the module docstring for what a subclass writes."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        limits = listener.limits
        self._max_target = limits.request_line_bytes
        self._max_headers = limits.header_count
        self._max_header_bytes = limits.header_bytes
        self._max_body = limits.body_bytes
        self._depth = limits.pipeline_depth
        # A head read over several reads: the field httptools gathers is bounded by this too.
        self._max_head = limits.request_line_bytes + limits.header_bytes + 4 * limits.header_count
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.sockname: Any = None
        # The request being parsed.
        self.request = _NO_REQUEST
        self.phase = _BETWEEN
        self.header_size = 0
        self.head_read = 0
        # Parsed requests waiting for the answer under way.
        self.queue: deque[Request] = deque()
        # An answer is under way, or the connection answers nothing more.
        self.busy = False
        # Start of the current phase, on the listener's clock (the deadlines' origin).
        self.since = listener.now
        self.closed = False
        self.writing_paused = False
        # When writing last paused, on the listener's clock (the send deadline's origin).
        self.paused_at = 0.0
        self.reading_paused = False
        # Reading stops for good (after an upgrade, or once the connection is ending).
        self.holding = False
        # Input is read and dropped (after an error answer).
        self.discarding = False
        self.ending = False
        self.refusal: AppError | None = None
        self.sink: Callable[[bytes], None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    def respond(self, request: Request) -> bool:
        """Answer ``request``: True when written whole, False when ``done`` will follow."""
        raise NotImplementedError

    def upgraded(self, rest: bytes) -> None:
        """The request just parsed switches protocols; ``rest`` is what followed it.

        By default the connection ends once that request is answered (as plain HTTP).
        """
        self.end()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.since = self.listener.now
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.busy = True
        self.queue.clear()
        self.listener.connections.discard(self)
        for waiter in (self._lost, self._writable):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        if self.discarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, AppError):
                self.refuse(cause)
            else:
                log.error("request failed", exc_info=cause or exc)
                self.refuse(AppError("the request could not be answered"))
            return
        except httptools.HttpParserUpgrade as exc:
            self.upgraded(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self.refuse(BadRequest(f"malformed HTTP request: {exc}"))
            return
        if self.phase == _HEAD:
            # httptools gathers a header field over reads before handing it over: count the
            # reads a head spans (all but its first, bounded by the read size).
            if self.head_read < 0:
                self.head_read = 0
            else:
                self.head_read += len(data)
                if self.head_read > self._max_head:
                    self.refuse(HeadersTooLarge(f"the request head exceeds {self._max_head} bytes"))

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.paused_at = self.listener.now
        self._flow()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._flow()

    # httptools callbacks

    def on_message_begin(self) -> None:
        request = _new_request(Request)
        request.target = b""
        request.headers = []
        request.body = b""
        request.version = ""
        self.request = request
        self.phase = _HEAD
        self.header_size = 0
        self.head_read = -1
        self.since = self.listener.now

    def on_url(self, url: bytes) -> None:
        request = self.request
        target = request.target = request.target + url
        if len(target) > self._max_target:
            raise UriTooLong(f"the request target exceeds {self._max_target} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.request.headers
        name = name.lower()
        headers.append((name, value))
        self.header_size += len(name) + len(value)
        if self.header_size > self._max_header_bytes:
            raise HeadersTooLarge(f"the request headers exceed {self._max_header_bytes} bytes")
        if len(headers) > self._max_headers:
            raise HeadersTooLarge(f"the request has more than {self._max_headers} headers")
        if name == b"content-length" and declared_length(value) > self._max_body:
            # Refused before a byte of the body is waited for or read.
            raise PayloadTooLarge(f"the request body exceeds {self._max_body} bytes")

    def on_body(self, body: bytes) -> None:
        request = self.request
        request.body += body
        if len(request.body) > self._max_body:
            raise PayloadTooLarge(f"the request body exceeds {self._max_body} bytes")
        # The deadline runs from the body's last part. The head's end is noticed here rather
        # than in on_headers_complete, one callback less per request: a late body counts as a
        # slow head.
        self.phase = _BODY
        self.since = self.listener.now

    def on_message_complete(self) -> None:
        request = self.request
        parser = self.parser
        request.method = parser.get_method()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        self.phase = _BETWEEN
        if self.busy:
            if not self.closed:
                request.version = parser.get_http_version()
                self.queue.append(request)
                if len(self.queue) >= self._depth:
                    self._flow()
            return
        self.busy = True
        try:
            whole = self.respond(request)
        except BaseException:
            # The failed request is answered by the error the parser reports.
            self.busy = False
            raise
        if whole:
            self.busy = False
            if not request.keep_alive:
                self.close()
        elif not request.version:
            # The answer goes on after the parser has moved on to later requests.
            request.version = parser.get_http_version()

    # For subclasses

    def http_version(self, request: Request) -> str:
        """``"1.1"`` or ``"1.0"``; from ``respond``, before the parser moves on."""
        version = request.version
        if not version:
            version = request.version = self.parser.get_http_version()
        return version

    def write(self, data: bytes) -> None:
        """Send ``data`` unless the connection is closed."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        """Send ``parts`` in one go unless the connection is closed."""
        if not self.closed and self.transport is not None:
            self.transport.writelines(parts)

    def done(self, keep_alive: bool) -> None:
        """The answer under way is whole: answer the next request, or close."""
        if self.closed:
            return
        self.busy = False
        self.since = self.listener.now
        if not keep_alive or self.listener.stopping:
            self.close()
            return
        self._next()

    def refuse(self, exc: AppError) -> None:
        """Answer ``exc`` once the answers under way are out, then close; read no more."""
        if self.ending:
            return
        self.ending = self.discarding = True
        self.refusal = exc
        if self.busy:
            self._flow()
        else:
            self._end()

    def end(self) -> None:
        """Close once the answers under way are out; read no more requests."""
        if self.ending:
            return
        self.ending = self.holding = True
        if self.busy:
            self._flow()
        else:
            self._end()

    def hold(self) -> None:
        """Stop reading until ``tunnel`` or the close."""
        self.holding = True
        self._flow()

    def tunnel(self, sink: Callable[[bytes], None]) -> None:
        """Hand every byte read from now on to ``sink`` (the far end of an accepted upgrade)."""
        self.sink = sink
        self.busy = True
        self.holding = False
        self._flow()

    def close(self) -> None:
        """Close once what was written is sent; nothing more is answered."""
        self.closed = self.busy = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what was not sent."""
        self.closed = self.busy = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Close at once with a reset: what the system still buffers for the client is dropped
        too (a plain close would keep it, and the connection, until the client takes it)."""
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
        self.abort()

    async def writable(self) -> None:
        """Wait while the client is not taking what was written."""
        if self.writing_paused and not self.closed:
            if self._writable is None or self._writable.done():
                self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    async def lost(self) -> None:
        """Wait until the connection is gone."""
        if not self.closed:
            if self._lost is None:
                self._lost = asyncio.get_running_loop().create_future()
            await self._lost

    # Order and flow

    def _next(self) -> None:
        queue = self.queue
        while queue and not self.busy:
            request = queue.popleft()
            self.busy = True
            try:
                whole = self.respond(request)
            except Exception as exc:
                if not isinstance(exc, AppError):
                    log.exception("request failed")
                    exc = AppError("the request could not be answered")
                self.busy = False
                queue.clear()
                self.refuse(exc)
                return
            if whole:
                self.busy = False
                if not request.keep_alive:
                    self.close()
                    return
        if not self.busy:
            self.since = self.listener.now
            if self.ending:
                self._end()
                return
        self._flow()

    def _end(self) -> None:
        """Nothing is under way: send the refusal, if any, and close."""
        self.busy = True
        self.queue.clear()
        refusal = self.refusal
        if refusal is None or self.transport is None:
            self.close()
            return
        self.transport.write(error_bytes(refusal, self.listener.date))
        self._linger()

    def _linger(self) -> None:
        """Close after an error answer without losing it.

        Closing a socket with unread input (the rest of a refused body) sends a reset, which can
        destroy the answer before the client reads it: end our side, drop what still arrives,
        and close when the client does or after ``LINGER_SECONDS``.
        """
        transport = self.transport
        if transport is None or self.closed:
            return
        if not transport.can_write_eof():
            self.close()
            return
        self.discarding = True
        transport.write_eof()
        self._flow()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.close)

    def _flow(self) -> None:
        """Read while the client takes what is written and few requests wait (or to drop)."""
        if self.closed or self.transport is None:
            return
        read = self.discarding or not (
            self.writing_paused or self.holding or len(self.queue) >= self._depth
        )
        if read == self.reading_paused:
            self.reading_paused = not read
            if read:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()
