"""The balancer's listening side: viewer connections on the shared HTTP/1.1 kit.

Viewer requests go to the proxy. The balancer's own paths (the dashboard, its WebSocket, stats,
metrics, health) go to the FastAPI app, served by uvicorn on a private Unix socket: such a
request is forwarded there and the app's answer relayed back verbatim; a WebSocket upgrade
turns the connection into a byte tunnel to the app. Parsing, limits, deadlines, pipelining (in
request order) and error answers are the kit's (``shared.http.h1``).
"""

from __future__ import annotations

import asyncio
import time

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
from shared.core.errors import AppError, BadRequest, UpstreamUnavailable
from shared.http import cors, h1
from shared.http.h1_limits import Limits

_NEW_IDS = iter(range(1, 2**63))
_ID_PREFIX = f"{time.time_ns() & 0xFFFFFFFF:08x}"


def new_request_id() -> bytes:
    """A process-unique id; cheaper than a UUID per request and as good for log correlation."""
    return f"{_ID_PREFIX}{next(_NEW_IDS):016x}".encode()


class Front:
    """What every viewer connection shares: the proxy, the app's address, the listener."""

    def __init__(
        self,
        proxy: Proxy,
        connections: Connections,
        control: Address,
        control_paths: frozenset[str],
        limits: Limits,
    ) -> None:
        self.proxy = proxy
        self.connections = connections
        self.control = control
        self.control_paths = control_paths
        self.listener = h1.Listener(limits)

    def is_control(self, path: str) -> bool:
        """Whether a path belongs to the balancer itself rather than to the backends."""
        return path in self.control_paths or path.startswith("/dashboard/")

    def protocol(self) -> ViewerConnection:
        """A connection for the listener to serve a new viewer with."""
        return ViewerConnection(self)


class ViewerConnection(h1.Connection):
    """One client connection: each request to the proxy or to the app, answered in order."""

    def __init__(self, front: Front) -> None:
        super().__init__(front.listener)
        self.front = front
        self.active: Exchange | ControlRelay | None = None
        self.upstream_tunnel: Upstream | None = None
        self.upgrade_rest = b""
        self.client_ip = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = self.peer
        if isinstance(peer, tuple) and peer:
            self.client_ip = str(peer[0]).encode()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        active, self.active = self.active, None
        if active is not None:
            active.viewer_gone()
        if self.upstream_tunnel is not None:
            self.upstream_tunnel.close()
            self.upstream_tunnel = None

    def pause_writing(self) -> None:
        super().pause_writing()
        source = self._source()
        if source is not None:
            source.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        source = self._source()
        if source is not None:
            source.resume_reading()

    def _source(self) -> Upstream | None:
        """The backend connection whose bytes are being written to this viewer, if any."""
        if self.upstream_tunnel is not None:
            return self.upstream_tunnel
        return self.active.conn if self.active is not None else None

    # -- the kit's callbacks ----------------------------------------------------------------

    def respond(self, request: h1.Request) -> bool:
        target = request.target
        if not target.startswith(b"/"):
            # Absolute form (GET http://host/path): keep the path and query.
            try:
                parsed = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise BadRequest("the request target is not a URL") from None
            target = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        path = target.split(b"?", 1)[0].decode("latin-1")
        request_id = origin = b""
        for name, value in request.headers:
            if name == b"x-request-id":
                request_id = value[:128]
            elif name == b"origin":
                origin = value
        method = request.method
        proxied = Request(
            method,
            target,
            path,
            request.headers,
            http_11=self.http_version(request) == "1.1",
            keep_alive=request.keep_alive,
            request_id=request_id or new_request_id(),
            origin=origin,
        )
        if self.front.is_control(path):
            relay = ControlRelay(self, proxied, request.body, upgrade=request.upgrade)
            self.active = relay
            relay.start()
            return False
        if request.upgrade:
            request.keep_alive = proxied.keep_alive = False
            self._reply(proxied, BadRequest(f"no protocol upgrade on {path}"))
            return True
        if method == b"OPTIONS" and self._preflight(proxied):
            return True
        if method not in (b"GET", b"HEAD"):
            self._reply(
                proxied,
                MethodNotAllowed(
                    f"{method.decode('latin-1')} is not proxied; only GET and HEAD",
                    headers={"Allow": "GET, HEAD"},
                ),
            )
            return True
        exchange = Exchange(self.front.proxy, proxied, self, self.client_ip)
        self.active = exchange
        exchange.attempt()
        return False

    def upgraded(self, rest: bytes) -> None:
        # Held for the app until it accepts (a tunnel) or refuses (the connection closes).
        self.upgrade_rest += rest
        self.hold()

    def done(self, keep_alive: bool) -> None:
        self.active = None
        super().done(keep_alive)

    def _preflight(self, request: Request) -> bool:
        """Answer a CORS preflight with a 204 from the proxy's policy; False if it is not one."""
        found = {name: value.decode("latin-1") for name, value in request.headers}
        origin = found.get(b"origin")
        request_method = found.get(b"access-control-request-method")
        if not cors.is_preflight("OPTIONS", origin, request_method):
            return False
        assert origin is not None and request_method is not None
        asked = found.get(b"access-control-request-headers")
        headers = self.front.proxy.cors.preflight(origin, request_method, asked)
        fields = [(n.encode(), v.encode("latin-1")) for n, v in headers]
        fields += [(b"content-length", b"0"), (b"x-request-id", request.request_id)]
        head = h1.response_head(204, fields, self.front.listener.date, request.keep_alive)
        self.write(head)
        self.front.proxy.metrics.observe(request.method, 204, 0.0, 0)
        return True

    def _reply(self, request: Request, exc: AppError) -> None:
        self.write(error_response(exc, request.request_id, keep_alive=request.keep_alive))
        self.front.proxy.metrics.observe(request.method, exc.status, 0.0, 0)

    def start_tunnel(self, conn: Upstream) -> None:
        """After a 101 from the app: bytes flow both ways untouched until either side closes."""
        self.active = None
        self.upstream_tunnel = conn
        rest, self.upgrade_rest = self.upgrade_rest, b""
        if rest:
            conn.write(rest)
        self.tunnel(conn.write)


class ControlRelay:
    """One request for the balancer's own app: forwarded over the private socket, answered
    verbatim."""

    def __init__(
        self, viewer: ViewerConnection, request: Request, body: bytes, *, upgrade: bool
    ) -> None:
        self.viewer = viewer
        self.request = request
        self.body = body
        self.upgrade = upgrade
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
        head_only = self.request.method == b"HEAD"
        conn.begin(self, self._request_bytes(), head_only=head_only, raw=self)
        if self.viewer.writing_paused:
            conn.pause_reading()

    def _request_bytes(self) -> bytes:
        request = self.request
        version = b"HTTP/1.1" if request.http_11 else b"HTTP/1.0"
        lines = [request.method, b" ", request.target, b" ", version, b"\r\n"]
        for name, value in request.headers:
            # The body was read whole, so it goes on with a length whatever its framing was.
            if name not in (b"content-length", b"transfer-encoding"):
                lines += [name, b": ", value, b"\r\n"]
        body = self.body
        if body:
            lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        lines += [b"\r\n", body]
        return b"".join(lines)

    def on_raw(self, data: bytes) -> None:
        self.wrote = True
        self.viewer.write(data)

    def on_head(self, conn: Upstream) -> None:
        pass

    def on_body(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def on_end(self, conn: Upstream) -> None:
        self.conn = None
        self.done = True
        keep_alive = conn.keep_alive and self.request.keep_alive
        self.connections.release(conn)
        # A refused upgrade leaves the viewer expecting another protocol: start afresh.
        self.viewer.done(keep_alive and not self.upgrade)

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
        request = self.request
        self.viewer.write(error_response(exc, request.request_id, keep_alive=False))
        self.viewer.done(False)

    def viewer_gone(self) -> None:
        self.done = True
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
