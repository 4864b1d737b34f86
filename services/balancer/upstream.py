"""Keep-alive HTTP/1.1 connections to backends, each parsing the responses it reads.

A connection serves one request at a time for a ``Handler`` (the exchange relaying it) and
reports the response as events: head, body chunks as they arrive, end, or loss of the
connection. Bodies with a Content-Length skip the parser after the first chunk and go to the
handler as received, so relaying a segment costs little more than reading and writing it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

NO_BODY_STATUSES = frozenset({204, 304})


class Handler(Protocol):
    """What a connection tells the exchange it serves."""

    def on_head(self, conn: Upstream) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def flush(self) -> None:
        """Everything read so far has been handed over (a head alone may be waiting)."""

    def on_end(self, conn: Upstream) -> None: ...

    def on_lost(self, conn: Upstream, problem: BaseException | None) -> None: ...


class RawHandler(Handler, Protocol):
    """A handler that also wants every byte read, verbatim (the control-app relay)."""

    def on_raw(self, data: bytes) -> None: ...

    def on_upgrade(self, conn: Upstream) -> None: ...


@dataclass(frozen=True)
class Address:
    """Where a backend listens: TCP host and port (optionally TLS) or a Unix socket."""

    host: str = ""
    port: int = 0
    tls: bool = False
    unix_path: str | None = None

    @classmethod
    def of(cls, url: str) -> Address:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        return cls(parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls)

    @property
    def netloc(self) -> bytes:
        """The Host header for a request that came without one."""
        return f"{self.host}:{self.port}".encode() if self.unix_path is None else b"localhost"


class Upstream(asyncio.Protocol):
    """One connection to a backend; see the module docstring."""

    def __init__(self, address: Address, pool: Connections) -> None:
        self.address = address
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.handler: Handler | None = None
        self.raw: RawHandler | None = None
        self.closed = False
        self.timed_out = False
        self.reused = False
        self.tunnel = False
        self.reading_paused = False
        self.last_active = time.monotonic()
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._remaining = -1  # body bytes still to come when bypassing the parser
        self._body_seen = 0
        self.received = 0
        self.status = 0
        self.reason = b""
        # (lower-cased name, name as sent, value) of the response being read.
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.head_done = False

    # -- driven by the exchange -------------------------------------------------------------

    def begin(
        self, handler: Handler, request: bytes, *, head_only: bool, raw: RawHandler | None = None
    ) -> None:
        """Send one request; the response comes back as events on ``handler``."""
        self.handler = handler
        self.raw = raw
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._remaining = -1
        self.received = 0
        self._body_seen = 0
        self.reason = b""
        self.headers = []
        self.content_length = None
        self.chunked = False
        self.head_done = False
        self.last_active = time.monotonic()
        assert self.transport is not None
        self.transport.write(request)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.last_active = time.monotonic()
            self.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection (mid-response, or not worth keeping); the handler is let go."""
        self.handler = self.raw = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
        self.pool.forget(self)

    def write(self, data: bytes) -> None:
        """Bytes for the backend after an upgrade (the tunnel's client-to-app direction)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.received += len(data)
        raw = self.raw
        if raw is not None:
            raw.on_raw(data)
            if self.tunnel:
                return
        handler = self.handler
        if handler is None:
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self.close()
            return
        remaining = self._remaining
        if remaining >= 0:
            if len(data) > remaining:
                self.keep_alive = False
                data = data[:remaining]
            self._remaining = remaining - len(data)
            if raw is None:
                handler.on_body(data)
            if self._remaining == 0:
                self._finish()
            return
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.tunnel = True
            if raw is not None:
                raw.on_upgrade(self)
            return
        except httptools.HttpParserError as exc:
            self._lose(exc)
            return
        if self.handler is handler and self.head_done:
            handler.flush()
            if self.content_length is not None:
                # Past the head: the rest of a known-length body needs no parsing.
                self._remaining = self.content_length - self._body_seen

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        handler = self.handler
        self.pool.forget(self)
        if handler is None:
            return
        if self.head_done and not self.tunnel and self.content_length is None and not self.chunked:
            # A body delimited by the close of the connection has just ended.
            self._finish()
            return
        self._lose(TimeoutError("no data from the backend in time") if self.timed_out else exc)

    # -- httptools callbacks ----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        self.headers.append((lowered, name, value))
        if lowered == b"content-length":
            self.content_length = int(value)
        elif lowered == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200 and self.status != 101:
            # An interim answer (100 Continue): the real head follows.
            self.headers, self.reason = [], b""
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.head_done = True
        self._body_seen = 0
        if self.chunked:
            self.content_length = None
        no_body = self._head_only or self.status in NO_BODY_STATUSES
        if no_body:
            self.content_length = 0
        handler = self.handler
        if handler is not None:
            handler.on_head(self)
        if no_body and self.handler is handler and handler is not None:
            # The parser cannot be told a HEAD answer has no body; end the message here and
            # give the next request a fresh parser.
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        if self.handler is not None and self.raw is None:
            self.handler.on_body(body)

    def on_message_complete(self) -> None:
        # A 101 answer is followed by the upgraded protocol, not by the end of a message.
        if self.handler is not None and self.head_done and self.status != 101:
            self._finish()

    # -- internals --------------------------------------------------------------------------

    def _finish(self) -> None:
        handler = self.handler
        self.handler = self.raw = None
        self._remaining = -1
        self.reason = b""
        if handler is not None:
            handler.on_end(self)

    def _lose(self, problem: BaseException | None) -> None:
        handler = self.handler
        self.close()
        if handler is not None:
            handler.on_lost(self, problem)


class Connections:
    """Idle keep-alive connections per address, opened on demand up to a total limit."""

    def __init__(
        self,
        *,
        connect_timeout_seconds: float,
        read_timeout_seconds: float,
        idle_timeout_seconds: float,
        max_connections: int,
    ) -> None:
        self.connect_timeout = connect_timeout_seconds
        self.read_timeout = read_timeout_seconds
        self.idle_timeout = idle_timeout_seconds
        self.max_connections = max_connections
        self.idle: dict[Address, list[Upstream]] = {}
        self.open_count = 0
        self._all: set[Upstream] = set()
        self._slot_freed = asyncio.Event()
        self._tls = ssl.create_default_context()

    def take(self, address: Address) -> Upstream | None:
        """The most recently used idle connection to ``address``, if one is still open."""
        idle = self.idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def open(self, address: Address) -> Upstream:
        """A new connection, once the total is under the limit (an idle one may give way)."""
        while self.open_count >= self.max_connections:
            if not self._close_oldest_idle():
                self._slot_freed.clear()
                await self._slot_freed.wait()
        self.open_count += 1
        conn = Upstream(address, self)
        self._all.add(conn)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.unix_path is not None:
                    # Connected by hand: the path may be an abstract name (a leading NUL).
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, address.unix_path)
                    except BaseException:
                        sock.close()
                        raise
                    await loop.create_unix_connection(lambda: conn, sock=sock)
                else:
                    await loop.create_connection(
                        lambda: conn,
                        address.host,
                        address.port,
                        ssl=self._tls if address.tls else None,
                    )
        except BaseException:
            conn.closed = True
            self.forget(conn)
            raise
        return conn

    def release(self, conn: Upstream) -> None:
        """Keep a connection whose response ended cleanly for the next request."""
        if conn.closed or not conn.keep_alive or conn.tunnel:
            conn.close()
            return
        conn.resume_reading()
        conn.last_active = time.monotonic()
        self.idle.setdefault(conn.address, []).append(conn)

    def forget(self, conn: Upstream) -> None:
        if conn in self._all:
            self._all.discard(conn)
            self.open_count -= 1
            self._slot_freed.set()

    def sweep(self, now: float) -> None:
        """Close connections idle too long; time out responses that stopped arriving."""
        for idle in self.idle.values():
            stale = [c for c in idle if c.closed or now - c.last_active > self.idle_timeout]
            for conn in stale:
                idle.remove(conn)
                conn.close()
        for conn in list(self._busy()):
            if not conn.reading_paused and now - conn.last_active > self.read_timeout:
                conn.timed_out = True
                assert conn.transport is not None
                conn.transport.abort()

    def close_all(self) -> None:
        for conn in list(self._all):
            conn.close()
        self.idle.clear()

    def _busy(self) -> Iterator[Upstream]:
        return (c for c in self._all if c.handler is not None and not c.tunnel)

    def _close_oldest_idle(self) -> bool:
        candidates = [c for idle in self.idle.values() for c in idle]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda c: c.last_active)
        self.idle[oldest.address].remove(oldest)
        oldest.close()
        return True
