"""The balancer's listening side: HTTP/1.1 viewer connections parsed with httptools.

Viewer requests go to the proxy. The balancer's own paths (the dashboard, its WebSocket, stats,
metrics, health) go to the FastAPI app, served by uvicorn on a private Unix socket: such a
request is forwarded there and the app's answer relayed back verbatim; a WebSocket upgrade
turns the connection into a byte tunnel to the app. Requests on one connection are answered
in order (pipelined ones wait their turn).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, cast

import httptools

from services.balancer.proxy import (
    UPSTREAM_ERRORS,
    Exchange,
    MethodNotAllowed,
    Proxy,
    Request,
    error_response,
)
from services.balancer.upstream import Address, Connections, Upstream
from shared.core.errors import AppError, BadRequest, PayloadTooLarge, UpstreamUnavailable

CONTROL_BODY_MAX_BYTES = 1024 * 1024
# Requests parsed ahead of the one being answered before the viewer's socket is left unread.
PIPELINE_DEPTH = 16
_NEW_IDS = iter(range(1, 2**63))
_ID_PREFIX = f"{time.time_ns() & 0xFFFFFFFF:08x}"


def new_request_id() -> bytes:
    """A process-unique id; cheaper than a UUID per request and as good for log correlation."""
    return f"{_ID_PREFIX}{next(_NEW_IDS):016x}".encode()


class Front:
    """What every viewer connection shares: the proxy, the app's address, the open connections."""

    def __init__(
        self,
        proxy: Proxy,
        connections: Connections,
        control: Address,
        control_paths: frozenset[str],
        keep_alive_seconds: float,
    ) -> None:
        self.proxy = proxy
        self.connections = connections
        self.control = control
        self.control_paths = control_paths
        self.keep_alive_seconds = keep_alive_seconds
        self.viewers: set[ViewerConnection] = set()

    def is_control(self, path: str) -> bool:
        """Whether a path belongs to the balancer itself rather than to the backends."""
        return path in self.control_paths or path.startswith("/dashboard/")

    def protocol(self) -> ViewerConnection:
        return ViewerConnection(self)

    def sweep(self, now: float) -> None:
        """Close viewer connections left idle longer than the keep-alive timeout."""
        for viewer in list(self.viewers):
            if viewer.idle and now - viewer.last_active > self.keep_alive_seconds:
                viewer.close()

    def close_idle(self) -> None:
        for viewer in list(self.viewers):
            if viewer.idle:
                viewer.close()

    def close_all(self) -> None:
        for viewer in list(self.viewers):
            viewer.abort()


class Incoming:
    """A request as parsed so far."""

    __slots__ = ("body", "body_size", "control", "headers", "method", "path", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.control = False
        self.method = b""
        self.path = ""


class Pending:
    """A whole request waiting for its turn on the connection."""

    __slots__ = ("body", "control", "request", "too_big", "upgrade")

    def __init__(
        self, request: Request, *, control: bool, upgrade: bool, body: bytes, too_big: bool
    ) -> None:
        self.request = request
        self.control = control
        self.upgrade = upgrade
        self.body = body
        self.too_big = too_big


class ViewerConnection(asyncio.Protocol):
    """One client connection: parse requests, hand each to the proxy or the app, in order."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closed = False
        self.writing_paused = False
        self.reading_paused = False
        self.queue: deque[Pending] = deque()
        self.active: Exchange | ControlRelay | None = None
        self.tunnel: Upstream | None = None
        self.upgrade_rest = b""
        self.client_ip = b""
        self.last_active = time.monotonic()
        self.incoming = Incoming()
        self.refused = False

    @property
    def idle(self) -> bool:
        return self.active is None and self.tunnel is None and not self.queue

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer: Any = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.client_ip = str(peer[0]).encode()
        self.front.viewers.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.refused:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # What follows the upgrade request belongs to the upgraded protocol.
            self.upgrade_rest = data[exc.args[0] :]
            self._pause_reading()
        except httptools.HttpParserError as exc:
            self.refused = True
            self._refuse(BadRequest(f"malformed HTTP request: {exc}"))

    def pause_writing(self) -> None:
        self.writing_paused = True
        source = self.tunnel or (self.active.conn if self.active is not None else None)
        if source is not None:
            source.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        source = self.tunnel or (self.active.conn if self.active is not None else None)
        if source is not None:
            source.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.viewers.discard(self)
        active, self.active = self.active, None
        if active is not None:
            active.viewer_gone()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    # -- httptools callbacks ----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.incoming.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.incoming.headers.append((name, value))

    def on_headers_complete(self) -> None:
        incoming = self.incoming
        url = incoming.url
        if not url.startswith(b"/"):
            # Absolute form (GET http://host/path): keep the path and query.
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
            incoming.url = url
        incoming.path = url.split(b"?", 1)[0].decode("latin-1")
        incoming.method = self.parser.get_method()
        incoming.control = self.front.is_control(incoming.path)

    def on_body(self, body: bytes) -> None:
        # Viewer requests are GET and HEAD: a body there has no meaning and is dropped.
        incoming = self.incoming
        if incoming.control and incoming.body_size <= CONTROL_BODY_MAX_BYTES:
            incoming.body.append(body)
            incoming.body_size += len(body)

    def on_message_complete(self) -> None:
        incoming, self.incoming = self.incoming, Incoming()
        request_id = b""
        for name, value in incoming.headers:
            if name.lower() == b"x-request-id":
                request_id = value[:128]
                break
        parser = self.parser
        request = Request(
            incoming.method,
            incoming.url,
            incoming.path,
            incoming.headers,
            http_11=parser.get_http_version() == "1.1",
            keep_alive=parser.should_keep_alive(),
            request_id=request_id or new_request_id(),
        )
        too_big = incoming.body_size > CONTROL_BODY_MAX_BYTES
        if too_big:
            request.keep_alive = False
        pending = Pending(
            request,
            control=incoming.control,
            upgrade=parser.should_upgrade(),
            body=b"".join(incoming.body),
            too_big=too_big,
        )
        self.queue.append(pending)
        if self.active is None:
            self._next()
        elif len(self.queue) >= PIPELINE_DEPTH:
            self._pause_reading()

    # -- answering --------------------------------------------------------------------------

    def _next(self) -> None:
        while self.active is None and self.queue and not self.closed:
            pending = self.queue.popleft()
            request = pending.request
            if pending.too_big:
                limit = CONTROL_BODY_MAX_BYTES
                self._reply(request, PayloadTooLarge(f"request body over {limit} bytes"))
            elif pending.control:
                relay = ControlRelay(self, pending)
                self.active = relay
                relay.start()
            elif pending.upgrade:
                request.keep_alive = False
                self._reply(request, BadRequest(f"no protocol upgrade on {request.path}"))
            elif request.method not in (b"GET", b"HEAD"):
                self._reply(
                    request,
                    MethodNotAllowed(
                        f"{request.method.decode('latin-1')} is not proxied; only GET and HEAD",
                        headers={"Allow": "GET, HEAD"},
                    ),
                )
            else:
                exchange = Exchange(self.front.proxy, request, self, self.client_ip)
                self.active = exchange
                exchange.attempt()
        if self.active is None and self.reading_paused and not self.upgrade_rest:
            self._resume_reading()

    def _reply(self, request: Request, exc: AppError) -> None:
        self.send_head(error_response(exc, request.request_id, keep_alive=request.keep_alive))
        self.front.proxy.metrics.observe(request.method, exc.status, 0.0, 0)
        if not request.keep_alive:
            self.close()

    def _refuse(self, exc: AppError) -> None:
        """Refuse bytes that are not HTTP: a 400 unless a response is under way, then close."""
        if self.active is None:
            assert self.transport is not None
            self.transport.write(error_response(exc, new_request_id(), keep_alive=False))
        self.queue.clear()
        self.close(after_active=True)

    # -- the Viewer interface the exchanges write through ------------------------------------

    def send_head(self, head: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(head)

    def send_body(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_parts(self, parts: list[bytes]) -> None:
        if self.transport is not None and not self.closed:
            self.transport.writelines(parts)

    def end_response(self, *, keep_alive: bool) -> None:
        self.active = None
        self.last_active = time.monotonic()
        if not keep_alive or self.refused:
            self.close()
            return
        self._next()

    def start_tunnel(self, conn: Upstream) -> None:
        """After a 101 from the app: bytes flow both ways untouched until either side closes."""
        self.active = None
        self.tunnel = conn
        rest, self.upgrade_rest = self.upgrade_rest, b""
        if rest:
            conn.write(rest)
        self._resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self, *, after_active: bool = False) -> None:
        if after_active and self.active is not None:
            return  # end_response closes it
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()


class ControlRelay:
    """One request for the balancer's own app: forwarded over the private socket, answered
    verbatim."""

    def __init__(self, viewer: ViewerConnection, pending: Pending) -> None:
        self.viewer = viewer
        self.pending = pending
        self.connections = viewer.front.connections
        self.address = viewer.front.control
        self.conn: Upstream | None = None
        self.wrote = False
        self.done = False

    def start(self) -> None:
        conn = self.connections.take(self.address)
        if conn is not None:
            self._send(conn)
        else:
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await self.connections.open(self.address)
        except UPSTREAM_ERRORS as exc:
            if not self.done:
                self._fail(UpstreamUnavailable(f"the balancer's own app is not answering: {exc}"))
            return
        if self.done:
            self.connections.release(conn)
            return
        self._send(conn)

    def _send(self, conn: Upstream) -> None:
        self.conn = conn
        head_only = self.pending.request.method == b"HEAD"
        conn.begin(self, self._request_bytes(), head_only=head_only, raw=self)
        if self.viewer.writing_paused:
            conn.pause_reading()

    def _request_bytes(self) -> bytes:
        request = self.pending.request
        version = b"HTTP/1.1" if request.http_11 else b"HTTP/1.0"
        lines = [request.method, b" ", request.target, b" ", version, b"\r\n"]
        for name, value in request.headers:
            # The body was read whole, so it goes on with a length whatever its framing was.
            if name.lower() not in (b"content-length", b"transfer-encoding"):
                lines += [name, b": ", value, b"\r\n"]
        body = self.pending.body
        if body:
            lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        lines += [b"\r\n", body]
        return b"".join(lines)

    def on_raw(self, data: bytes) -> None:
        self.wrote = True
        self.viewer.send_body(data)

    def on_head(self, conn: Upstream) -> None:
        pass

    def on_body(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def on_end(self, conn: Upstream) -> None:
        self.conn = None
        self.done = True
        keep_alive = conn.keep_alive and self.pending.request.keep_alive
        self.connections.release(conn)
        # A refused upgrade leaves the viewer expecting another protocol: start afresh.
        self.viewer.end_response(keep_alive=keep_alive and not self.pending.upgrade)

    def on_upgrade(self, conn: Upstream) -> None:
        self.conn = None
        self.done = True
        self.viewer.start_tunnel(conn)

    def on_lost(self, conn: Upstream, problem: BaseException | None) -> None:
        self.conn = None
        if conn.tunnel:
            self.done = True
            self.viewer.close()
        elif self.wrote:
            self.done = True
            self.viewer.abort()
        elif conn.reused and conn.received == 0:
            asyncio.get_running_loop().create_task(self._connect())
        else:
            self._fail(UpstreamUnavailable(f"the balancer's own app failed: {problem!r}"))

    def _fail(self, exc: AppError) -> None:
        self.done = True
        request = self.pending.request
        self.viewer.send_head(error_response(exc, request.request_id, keep_alive=False))
        self.viewer.end_response(keep_alive=False)

    def viewer_gone(self) -> None:
        self.done = True
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
