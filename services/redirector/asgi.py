"""The redirect hot path, answered before the framework.

Only ``GET|HEAD /?video=...`` is answered here, with the same use case and error bodies as the
framework route; everything else (configuration, metrics, health) goes to the FastAPI app.
``redirect_reply`` is the answer itself, shared by the plain-ASGI wrapper below (under Granian
or uvicorn) and by the redirector's own HTTP server (``services.redirector.protocol``).
See docs/BENCHMARKS.md for what each saves.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from services.redirector.decision import viewer_key
from services.redirector.service import Redirector
from shared.core.errors import AppError

Headers = list[tuple[bytes, bytes]]
# Status, headers, body.
Reply = tuple[int, Headers, bytes]

_JSON = (b"content-type", b"application/json")
_NO_BODY = (b"content-length", b"0")


def _query_value(query_string: bytes, name: str) -> str | None:
    """One query parameter, decoded as the framework decodes it; the last one wins."""
    prefix = name + "="
    value = None
    for field in query_string.decode("latin-1").split("&"):
        if field.startswith(prefix):
            value = unquote_plus(field[len(prefix) :])
        elif field == name:
            value = ""
    return value


# Longer queries are decoded every time, so the cache stays within a few MiB.
_CACHED_QUERY_BYTES = 4096


@functools.lru_cache(maxsize=1024)
def _video(query_string: bytes) -> str | None:
    """The ``video`` parameter; the same popular queries recur, so each is decoded once."""
    return _query_value(query_string, "video")


def _viewer(headers: Iterable[tuple[bytes, bytes]], client: str | None) -> str | None:
    explicit = forwarded = None
    for name, value in headers:
        if name == b"x-viewer-id" and explicit is None:
            explicit = value.decode("latin-1")
        elif name == b"x-forwarded-for" and forwarded is None:
            forwarded = value.decode("latin-1")
    return viewer_key(explicit, forwarded, client)


def redirect_reply(
    redirector: Redirector,
    query_string: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    client: str | None,
) -> Reply | None:
    """The answer to ``GET /?<query_string>``; None when there is no ``video`` to redirect.

    ``headers`` are lower-cased names with their values; they are read in sticky mode only.
    """
    if b"video=" not in query_string:
        return None
    if len(query_string) <= _CACHED_QUERY_BYTES:
        video = _video(query_string)
    else:
        video = _query_value(query_string, "video")
    if video is None:
        return None
    viewer = _viewer(headers, client) if redirector.config.sticky else None
    try:
        answer = redirector.redirect(video, viewer)
    except AppError as exc:
        body = json.dumps(exc.body(), separators=(",", ":")).encode()
        return exc.status, [_JSON, (b"content-length", str(len(body)).encode())], body
    location = (b"location", answer.location.encode())
    return (
        answer.status,
        [location, (b"cache-control", answer.cache_control.encode()), _NO_BODY],
        b"",
    )


class FastRedirect:
    """Answers redirects without routing, dependency injection or middleware."""

    def __init__(self, app: ASGIApp, redirector: Redirector) -> None:
        self.app = app
        self.redirector = redirector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/"
            or scope["method"] not in ("GET", "HEAD")
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        reply = redirect_reply(
            self.redirector, scope["query_string"], scope["headers"], client[0] if client else None
        )
        if reply is None:
            await self.app(scope, receive, send)
            return
        status, headers, body = reply
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
