"""One request through the ASGI app, for the redirector's own server (everything but redirects).

The body has been read whole before the app runs (the configuration endpoints take small JSON
bodies); a response without a Content-Length goes out chunked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from services.redirector.wire import error_bytes, head_bytes

if TYPE_CHECKING:
    from services.redirector.protocol import Connection, Request

log = logging.getLogger(__name__)

_NO_BODY_STATUSES = frozenset({204, 304})


def _scope(conn: Connection, request: Request) -> dict[str, Any] | None:
    """The ASGI scope, or None when the request target is not a URL."""
    try:
        url = httptools.parse_url(request.target)
    except httptools.HttpParserInvalidURLError:
        return None
    raw_path = url.path or b"/"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version,
        "server": conn.server,
        "client": conn.client,
        "scheme": "http",
        "method": request.method.decode("ascii"),
        "root_path": "",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": url.query or b"",
        "headers": request.headers,
        "state": conn.shared.state.copy(),
    }


async def run_asgi(conn: Connection, request: Request) -> None:
    """Run the app for ``request`` and write its response; close the connection when it fails."""
    date = conn.shared.date
    scope = _scope(conn, request)
    if scope is None:
        conn.write(error_bytes(400, "bad_request", "the request target is not a URL", date))
        conn.close()
        return
    head_only = request.method == b"HEAD"
    state = {"body_sent": False, "started": False, "finished": False, "chunked": False}

    async def receive() -> dict[str, Any]:
        if not state["body_sent"]:
            state["body_sent"] = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await conn.lost()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if state["started"]:
                raise RuntimeError("http.response.start sent twice")
            state["started"] = True
            status = message["status"]
            headers = list(message.get("headers", []))
            if (
                not head_only
                and status >= 200
                and status not in _NO_BODY_STATUSES
                and all(name.lower() != b"content-length" for name, _ in headers)
            ):
                state["chunked"] = True
                headers.append((b"transfer-encoding", b"chunked"))
            conn.write(head_bytes(status, headers, date, request.keep_alive))
        elif message["type"] == "http.response.body":
            if not state["started"] or state["finished"]:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if state["chunked"]:
                if body:
                    conn.write(b"%x\r\n%s\r\n" % (len(body), body))
                if not more:
                    conn.write(b"0\r\n\r\n")
            elif body and not head_only:
                conn.write(body)
            state["finished"] = not more
            await conn.writable()

    try:
        await conn.shared.app(scope, receive, send)
    except Exception:
        log.exception("%s %s failed", scope["method"], scope["path"])
    if not state["finished"]:
        if not state["started"]:
            conn.write(
                error_bytes(500, "internal_error", "the request could not be answered", date)
            )
        conn.close()
    elif not request.keep_alive:
        conn.close()
