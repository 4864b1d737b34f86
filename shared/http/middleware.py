"""Pure-ASGI middleware: request ids, request metrics, and a bound on request bodies."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.core.errors import PayloadTooLarge
from shared.core.logging import request_id_var
from shared.http.errors import send_error
from shared.http.metrics import HTTP_DURATION, HTTP_IN_PROGRESS, HTTP_REQUESTS, HTTP_RESPONSE_BYTES

_UNTRACKED = frozenset({"/metrics", "/healthz", "/readyz"})


class RequestIdMiddleware:
    """Takes ``X-Request-ID`` from the client or makes one, and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def route_template(scope: Scope) -> str:
    """The matched route's path template, or a fixed label for unmatched paths."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts requests and measures their duration per route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACKED:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0
        in_progress_route: str | None = None

        async def observe(message: Message) -> None:
            nonlocal status, sent, in_progress_route
            if message["type"] == "http.response.start":
                status = message["status"]
                in_progress_route = route_template(scope)
                HTTP_IN_PROGRESS.labels(in_progress_route).inc()
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = route_template(scope)
            if in_progress_route is not None:
                HTTP_IN_PROGRESS.labels(in_progress_route).dec()
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - start)
            HTTP_RESPONSE_BYTES.labels(route).inc(sent)


@dataclass(frozen=True)
class RouteBodyLimit:
    """Another bound for the bodies of requests with ``method`` and a path matching ``path``
    (a regular expression of the whole path): a route that takes a small file."""

    method: str
    path: str
    max_bytes: int

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path) is not None


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, for a service that takes no uploads.

    The first of ``routes`` a request matches sets its bound instead. A declared
    ``Content-Length`` over the bound is refused before the route runs. A body sent without one
    (chunked, or HTTP/2 without a length) on a method that carries one is read here first, at
    most the bound, and refused as soon as it passes it; the route then reads it as it was sent.
    No route ever holds more than its bound of a body.
    """

    BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

    def __init__(self, app: ASGIApp, max_bytes: int, routes: Sequence[RouteBodyLimit] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.routes = tuple(routes)

    def _bound(self, scope: Scope) -> int:
        for route in self.routes:
            if route.matches(scope["method"], scope["path"]):
                return route.max_bytes
        return self.max_bytes

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        error = PayloadTooLarge(f"the request body exceeds {max_bytes} bytes", max_bytes=max_bytes)
        await send_error(send, error, close=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._bound(scope) if self.routes else self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > max_bytes:
                    await self._refuse(send, max_bytes)
                    return
                await self.app(scope, receive, send)
                return
        if scope["method"] not in self.BODY_METHODS:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > max_bytes:
                await self._refuse(send, max_bytes)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
