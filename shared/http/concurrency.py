"""Per-process caps on concurrent requests of a kind; past a cap, 503 with Retry-After at once.

A streamed upload or a tus PATCH holds 16-24 MiB of buffers on S3 while it runs, an event stream
a queue and a slot of the Redis fan-out: a burst of them, unbounded, takes the process's memory
and starves the rest. A service names its caps in a table (methods, a path pattern, a limit);
a request beyond one is refused before any route runs, with the platform's JSON error, so
clients back off (tus clients retry a 503 on their own) while requests already admitted go on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.core.errors import ServiceUnavailable
from shared.http.errors import send_error
from shared.http.metrics import HTTP_CAPPED_IN_PROGRESS, HTTP_CAPPED_LIMIT, HTTP_CAPPED_REFUSED
from shared.http.openapi import declare_status


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` requests at once with a method of ``methods`` and a path matching
    ``path`` (a regular expression of the whole path); with ``bodies_only``, only those that
    carry a body count (a tus creation with or without its first bytes)."""

    name: str  # the metric label
    methods: frozenset[str]
    path: str
    limit: int
    bodies_only: bool = False

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and re.fullmatch(self.path, path) is not None


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    # HTTP/2 may send a body without announcing its length.
    return scope.get("http_version") == "2" and scope["method"] in ("POST", "PUT", "PATCH")


class ConcurrencyLimits:
    """Pure-ASGI middleware enforcing ``caps``; the first cap a request matches is its own."""

    def __init__(self, app: ASGIApp, *, caps: Sequence[Cap], retry_after_seconds: int) -> None:
        self.app = app
        self.caps = tuple(caps)
        self.retry_after = str(retry_after_seconds)
        self.in_flight = {cap.name: 0 for cap in self.caps}
        for cap in self.caps:
            HTTP_CAPPED_LIMIT.labels(cap.name).set(cap.limit)

    def _cap(self, scope: Scope) -> Cap | None:
        for cap in self.caps:
            if cap.matches(scope["method"], scope["path"]):
                return None if cap.bodies_only and not _has_body(scope) else cap
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self._cap(scope) if scope["type"] == "http" else None
        if cap is None:
            await self.app(scope, receive, send)
            return
        if self.in_flight[cap.name] >= cap.limit:
            HTTP_CAPPED_REFUSED.labels(cap.name).inc()
            busy = ServiceUnavailable(
                f"too many {cap.name} requests at once: retry later",
                headers={"Retry-After": self.retry_after},
            )
            # A body left unread ends the HTTP/1.1 connection; HTTP/2 resets only the stream.
            close = _has_body(scope) and scope.get("http_version") != "2"
            await send_error(send, busy, close=close)
            return
        self.in_flight[cap.name] += 1
        HTTP_CAPPED_IN_PROGRESS.labels(cap.name).inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight[cap.name] -= 1
            HTTP_CAPPED_IN_PROGRESS.labels(cap.name).dec()


def document_caps(schema: dict[str, Any], caps: Sequence[Cap]) -> dict[str, Any]:
    """Declare the 503 of a full cap on each operation of ``schema`` (OpenAPI) a cap covers.

    A cap's pattern matches a route's path template too (``[^/]+`` takes ``{video_id}``).
    """
    return declare_status(
        schema, 503, lambda method, path: any(c.matches(method, path) for c in caps)
    )
