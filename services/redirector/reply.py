"""The redirect hot path: the answer to ``GET|HEAD /?video=...`` without the framework.

The same use case and error bodies as the framework route (``routes.root``); the redirector's
front (``services.redirector.front``) writes it from inside the HTTP parser's callback.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib.parse import unquote_plus

from services.redirector.decision import viewer_key
from services.redirector.service import Redirector
from shared.core.errors import AppError
from shared.http.errors import error_body

# Status, header lines (each ``name: value\r\n``), body.
Reply = tuple[int, bytes, bytes]


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
        body = error_body(exc)
        fields = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        return exc.status, fields, body
    return answer.status, answer.fields, b""
