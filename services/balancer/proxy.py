"""Forward one viewer request: pick a backend, retry elsewhere on failure, stream the body back.

Only GET and HEAD are proxied, so any attempt that fails before response headers (connect
error, timeout, a dropped keep-alive connection, a 5xx) is safe to repeat on another backend.
Once the body is flowing nothing can be retried: a backend dying then cuts that one response.

This is the hot path, so it runs on raw keep-alive connections (``upstream``) as callbacks, with
no task, framework or HTTP client in between; an exchange only awaits when it must open a new
connection. Body chunks go to the viewer as they arrive, and reading from the backend pauses
while the viewer's send buffer is full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from services.balancer import metrics
from services.balancer.pool import Backend, Pool
from services.balancer.upstream import Address, Connections, Upstream
from shared.core.errors import AppError, UpstreamUnavailable
from shared.http import cors
from shared.http.h1 import error_bytes
from shared.http.metrics import HTTP_DURATION, HTTP_IN_PROGRESS, HTTP_REQUESTS, HTTP_RESPONSE_BYTES

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Not passed on to the backend: the balancer sets its own request id and forwarding header, and
# a viewer's body (read whole by the front) is not forwarded, so neither is a length claiming
# one: the backend would wait for it, or read the next request on the connection as it.
_NOT_FORWARDED = HOP_BY_HOP | {b"x-request-id", b"x-forwarded-for", b"content-length"}
# Not passed back to the viewer: framing is the balancer's own, and so are the request id and
# the CORS answer (its own policy, added to every response).
_NOT_PASSED_BACK = (
    HOP_BY_HOP | {b"x-request-id"} | {name.encode() for name in cors.RESPONSE_HEADER_NAMES}
)
PROXY_ROUTE = "/{path:path}"
UPSTREAM_ERRORS = (OSError, TimeoutError)


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"


class Viewer(Protocol):
    """The viewer's side of an exchange: the connection the response is written to."""

    closed: bool
    writing_paused: bool

    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: list[bytes]) -> None: ...

    def done(self, keep_alive: bool) -> None:
        """The response is whole; the connection goes on with the next request or closes."""

    def abort(self) -> None: ...


class Request:
    """A parsed viewer request (header names lower-cased): what the proxy needs to forward it."""

    __slots__ = (
        "headers",
        "http_11",
        "keep_alive",
        "method",
        "origin",
        "path",
        "request_id",
        "target",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        path: str,
        headers: list[tuple[bytes, bytes]],
        *,
        http_11: bool,
        keep_alive: bool,
        request_id: bytes,
        origin: bytes = b"",
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.headers = headers
        self.http_11 = http_11
        self.keep_alive = keep_alive
        self.request_id = request_id
        self.origin = origin


def forwarded_head(request: Request, client_ip: bytes) -> tuple[bytes, bool]:
    """The request line and headers for a backend (minus Host when the viewer sent none)."""
    lines = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
    forwarded_for = client_ip
    has_host = False
    for name, value in request.headers:
        if name in _NOT_FORWARDED:
            if name == b"x-forwarded-for":
                forwarded_for = value + b", " + client_ip
            continue
        has_host = has_host or name == b"host"
        lines += [name, b": ", value, b"\r\n"]
    lines += [b"x-forwarded-for: ", forwarded_for, b"\r\nx-request-id: ", request.request_id]
    lines.append(b"\r\n")
    return b"".join(lines), has_host


def error_response(exc: AppError, request_id: bytes, *, keep_alive: bool) -> bytes:
    """A whole JSON error response, ``{"error": ..., "detail": ...}`` like every service's."""
    return error_bytes(exc, keep_alive=keep_alive, headers=((b"x-request-id", request_id),))


class RequestMetrics:
    """The platform's request metrics for proxied requests, children looked up once."""

    def __init__(self) -> None:
        self._requests: dict[tuple[bytes, int], Callable[[], None]] = {}
        self._duration = {
            m: HTTP_DURATION.labels(m.decode(), PROXY_ROUTE) for m in (b"GET", b"HEAD")
        }
        self.response_bytes = HTTP_RESPONSE_BYTES.labels(PROXY_ROUTE)

    def observe(self, method: bytes, status: int, seconds: float, sent: int) -> None:
        count = self._requests.get((method, status))
        if count is None:
            count = HTTP_REQUESTS.labels(method.decode("latin-1"), PROXY_ROUTE, str(status)).inc
            self._requests[(method, status)] = count
        count()
        duration = self._duration.get(method)
        if duration is None:
            duration = HTTP_DURATION.labels(method.decode("latin-1"), PROXY_ROUTE)
        duration.observe(seconds)
        if sent:
            self.response_bytes.inc(sent)


class Proxy:
    """The retrying forwarder over one pool and its backends' connections."""

    def __init__(
        self,
        pool: Pool,
        connections: Connections,
        max_attempts: int,
        cors: cors.CorsPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.connections = connections
        self.max_attempts = max_attempts
        self.cors = cors
        self.clock = clock
        self.retries_total = 0
        self.addresses = {b: Address.of(b.url) for b in pool.backends}
        self.metrics = RequestMetrics()
        # Read from the pool when scraped rather than counted up and down per request.
        HTTP_IN_PROGRESS.labels(PROXY_ROUTE).set_function(
            lambda: sum(backend.in_flight for backend in pool.backends)
        )
        self._outcomes = {
            (b, outcome): (b.name, outcome)
            for b in pool.backends
            for outcome in ("ok", "retried", "failed")
        }
        counts = metrics.UPSTREAM_REQUESTS.values
        for key in self._outcomes.values():
            counts.setdefault(key, 0)

    def forward(self, request: Request, viewer: Viewer, client_ip: bytes) -> Exchange:
        """Start relaying ``request``; the exchange reports to ``viewer`` as it goes."""
        exchange = Exchange(self, request, viewer, client_ip)
        exchange.attempt()
        return exchange

    def count(self, backend: Backend, outcome: str) -> None:
        metrics.UPSTREAM_REQUESTS.values[self._outcomes[(backend, outcome)]] += 1


class Exchange:
    """One viewer request on its way through the proxy, attempt by attempt."""

    def __init__(self, proxy: Proxy, request: Request, viewer: Viewer, client_ip: bytes) -> None:
        self.proxy = proxy
        self.request = request
        self.viewer = viewer
        self.head, self.has_host = forwarded_head(request, client_ip)
        self.head_only = request.method == b"HEAD"
        self.started = proxy.clock()
        self.tried: list[Backend] = []
        self.backend: Backend | None = None
        self.conn: Upstream | None = None
        self.attempt_started = 0.0
        self.last_problem = "no backend configured"
        self.responding = False
        self.held = b""
        self.chunked = False
        self.sent = 0
        self.status = 0
        self.done = False

    # -- attempts ---------------------------------------------------------------------------

    def attempt(self) -> None:
        proxy = self.proxy
        if self.viewer.closed:
            self._finish_quietly()
            return
        now = proxy.clock()
        backend = None
        if len(self.tried) < proxy.max_attempts:
            backend = proxy.pool.pick(now, self.tried)
        if backend is None:
            self._unavailable()
            return
        self.tried.append(backend)
        self.backend = backend
        self.attempt_started = now
        proxy.pool.started(backend)
        conn = proxy.connections.take(proxy.addresses[backend])
        if conn is not None:
            self._send(conn)
        else:
            asyncio.get_running_loop().create_task(self._connect(backend))

    async def _connect(self, backend: Backend) -> None:
        try:
            conn = await self.proxy.connections.open(self.proxy.addresses[backend])
        except UPSTREAM_ERRORS as exc:
            if not self.done:
                self._failed_before_head(backend, exc)
            return
        if self.done or self.viewer.closed:
            self.proxy.connections.release(conn)
            self._finish_quietly()
            return
        self._send(conn)

    def _send(self, conn: Upstream) -> None:
        self.conn = conn
        head = self.head
        if not self.has_host:
            head += b"host: " + conn.address.netloc + b"\r\n"
        conn.begin(self, head + b"\r\n", head_only=self.head_only)
        if self.viewer.writing_paused:
            conn.pause_reading()

    def can_retry(self) -> bool:
        return len(self.tried) < self.proxy.max_attempts and len(self.tried) < len(
            self.proxy.pool.backends
        )

    def _failed_before_head(self, backend: Backend, problem: BaseException | str | None) -> None:
        self.conn = None
        if not isinstance(problem, str):
            problem = f"{type(problem).__name__} {problem or ''}".strip() if problem else "closed"
        self.last_problem = f"{backend.name}: {problem}"
        self.backend = None
        retrying = self.can_retry()
        proxy = self.proxy
        proxy.pool.finished(backend, 0)
        proxy.pool.failed(backend, proxy.clock())
        proxy.count(backend, "retried" if retrying else "failed")
        if retrying:
            proxy.retries_total += 1
        self.attempt()

    def _unavailable(self) -> None:
        exc = UpstreamUnavailable(
            f"no backend could serve the request ({self.last_problem})",
            tried=[b.name for b in self.tried],
        )
        self.backend = None
        self.reply_error(exc)

    def reply_error(self, exc: AppError) -> None:
        """Answer with the balancer's own JSON error instead of a backend's response."""
        keep_alive = self.request.keep_alive
        self.viewer.write(error_response(exc, self.request.request_id, keep_alive=keep_alive))
        self.status = exc.status
        self._book_request()
        self.viewer.done(keep_alive)

    # -- events from the backend connection -------------------------------------------------

    def on_head(self, conn: Upstream) -> None:
        backend = self.backend
        assert backend is not None
        proxy = self.proxy
        status = conn.status
        if status >= 500 and self.can_retry():
            conn.close()
            self._failed_before_head(backend, f"HTTP {status}")
            return
        now = proxy.clock()
        if status >= 500:
            proxy.pool.failed(backend, now)
        else:
            proxy.pool.succeeded(backend, now - self.attempt_started, now)
        self.status = status
        self.responding = True
        # Held until the first body bytes, so head and body usually leave in one write.
        self.held = self._response_head(conn, backend)

    def _response_head(self, conn: Upstream, backend: Backend) -> bytes:
        request = self.request
        lines = [b"HTTP/1.1 ", str(conn.status).encode(), b" ", conn.reason, b"\r\n"]
        for lowered, name, value in conn.headers:
            if lowered not in _NOT_PASSED_BACK:
                lines += [name, b": ", value, b"\r\n"]
        lines += [b"x-backend: ", backend.name.encode("latin-1"), b"\r\nx-request-id: "]
        lines += [request.request_id, b"\r\n", self.proxy.cors.actual_bytes(request.origin)]
        if conn.content_length is None:
            # Chunked or ended by the close: re-framed for the viewer.
            if request.http_11:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                request.keep_alive = False
        if not request.keep_alive:
            lines.append(b"connection: close\r\n")
        elif not request.http_11:
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def on_body(self, data: bytes) -> None:
        self.sent += len(data)
        if self.chunked:
            self.viewer.writelines([self.held, b"%x\r\n" % len(data), data, b"\r\n"])
            self.held = b""
        elif self.held:
            self.viewer.writelines([self.held, data])
            self.held = b""
        else:
            self.viewer.write(data)

    def flush(self) -> None:
        if self.held:
            self.viewer.write(self.held)
            self.held = b""

    def on_end(self, conn: Upstream) -> None:
        self.conn = None
        self.proxy.connections.release(conn)
        if self.chunked:
            self.viewer.writelines([self.held, b"0\r\n\r\n"])
            self.held = b""
        else:
            self.flush()
        self._closed(upstream_broke=False)
        self.viewer.done(self.request.keep_alive)

    def on_lost(self, conn: Upstream, problem: BaseException | None) -> None:
        self.conn = None
        backend = self.backend
        assert backend is not None
        if self.responding:
            # Cutting the viewer's connection (rather than ending the body) shows a cut
            # response instead of a short one that looks whole.
            log.warning("stream from %s broke after %d bytes: %r", backend.name, self.sent, problem)
            self._closed(upstream_broke=True)
            self.viewer.abort()
            return
        if conn.reused and conn.received == 0 and not conn.timed_out:
            # A kept-alive connection the backend had closed: try a fresh one, no fault of it.
            asyncio.get_running_loop().create_task(self._connect(backend))
            return
        self._failed_before_head(backend, problem)

    def viewer_gone(self) -> None:
        """The viewer hung up: stop reading from the backend; it is not the backend's fault."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        if self.responding:
            self._closed(upstream_broke=False)
        else:
            self._finish_quietly()

    # -- bookkeeping ------------------------------------------------------------------------

    def _closed(self, *, upstream_broke: bool) -> None:
        if self.done:
            return
        self.done = True
        backend = self.backend
        assert backend is not None
        proxy = self.proxy
        proxy.pool.finished(backend, self.sent)
        if upstream_broke:
            proxy.pool.failed(backend, proxy.clock())
        proxy.count(backend, "failed" if upstream_broke else "ok")
        self._book_request()

    def _finish_quietly(self) -> None:
        if self.done:
            return
        self.done = True
        if self.backend is not None:
            self.proxy.pool.finished(self.backend, 0)

    def _book_request(self) -> None:
        self.proxy.metrics.observe(
            self.request.method, self.status, self.proxy.clock() - self.started, self.sent
        )
