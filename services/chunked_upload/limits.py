"""Bounds of a request's head (its target and headers), checked before any route runs.

Granian refuses a request line or header block that does not fit its read buffer with a bare
431 before the app sees it. Below that, a request with a longer target, more header bytes or
more headers than tus needs hears the platform's JSON 414 or 431 here, in the time it takes to
add up a few lengths.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.core.errors import AppError, HeadersTooLarge, UriTooLong
from shared.http.errors import send_error


class RequestHeadLimits:
    """Refuse a request whose path and query, headers together or header count exceed a limit."""

    def __init__(
        self, app: ASGIApp, *, max_target_bytes: int, max_header_bytes: int, max_headers: int
    ) -> None:
        self.app = app
        self.max_target_bytes = max_target_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self._excess(scope)
            if error is not None:
                # The request's body, if any, is left unread: this connection is not reused.
                await send_error(send, error, close=True)
                return
        await self.app(scope, receive, send)

    def _excess(self, scope: Scope) -> AppError | None:
        target = len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"])
        if target > self.max_target_bytes:
            return UriTooLong(f"the request target is limited to {self.max_target_bytes} bytes")
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            return HeadersTooLarge(f"send at most {self.max_headers} request headers")
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            return HeadersTooLarge(f"request headers are limited to {self.max_header_bytes} bytes")
        return None
