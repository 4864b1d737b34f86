"""HTTP/1.1 response bytes for the redirector's own server."""

from __future__ import annotations

import json
from http import HTTPStatus

from services.redirector.asgi import Headers

REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def head_bytes(status: int, headers: Headers, date: bytes, keep_alive: bool) -> bytes:
    """Status line and header block of a response; ``date`` is a whole ``date:`` line."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"")), date]
    lines += [b"%s: %s\r\n" % pair for pair in headers]
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def error_bytes(status: int, code: str, detail: str, date: bytes) -> bytes:
    """A whole ``{"error": code, "detail": detail}`` response that closes the connection."""
    body = json.dumps({"error": code, "detail": detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return head_bytes(status, headers, date, False) + body
