"""How an error answer is rendered: ``{"error": code, "detail": ...}`` as JSON.

The same bytes go out as a Starlette response (the app's exception handlers) or as raw ASGI
messages (middleware that refuses a request before any route runs).
"""

from __future__ import annotations

import json

from fastapi.responses import Response
from starlette.types import Send

from shared.core.errors import AppError

JSON = "application/json"


def _json(content: object) -> bytes:
    # As FastAPI's JSONResponse renders it: compact, UTF-8.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def error_body(exc: AppError) -> bytes:
    """The JSON bytes of an error answer: ``{"error": code, "detail": ...}`` plus its extras."""
    return _json(exc.body())


def error_response(
    status: int, code: str, detail: object, headers: dict[str, str] | None = None
) -> Response:
    """The JSON error answer every service returns, for errors outside the domain tree."""
    body = _json({"error": code, "detail": detail})
    return Response(body, status_code=status, headers=headers, media_type=JSON)


async def send_error(send: Send, error: AppError, *, close: bool = False) -> None:
    """Answer ``error`` as plain ASGI messages, with its headers.

    ``close`` when the request's body is left unread (HTTP/1.1 only): the connection is then
    not reused.
    """
    body = error_body(error)
    headers = [
        (b"content-type", JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in error.headers.items()
        ),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
