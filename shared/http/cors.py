"""Cross-origin reads: which sites may read a response, and the headers that say so.

Media (``/origin/...`` playlists, segments, posters) is protected by signed URLs, not by the
browser's same-origin rule, so the edges, the balancer and the origin let the sites in
``CORS_ALLOWED_ORIGINS`` (``*`` by default) read it with GET and HEAD, Range included. No
credentials are ever allowed. One ``CorsPolicy`` decides for every front: its header lists are
built when it is made, so a response costs one dictionary lookup of its ``Origin`` header. A
disallowed origin gets no CORS headers; with a list of origins every answer carries
``Vary: Origin``, so a shared cache never gives one site's answer to another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = tuple[tuple[str, str], ...]

ANY_ORIGIN = "*"
MEDIA_METHODS = ("GET", "HEAD")
MEDIA_REQUEST_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")
MEDIA_EXPOSED_HEADERS = (
    "Content-Range",
    "Content-Length",
    "ETag",
    "Accept-Ranges",
    "Last-Modified",
)
MAX_AGE_SECONDS = 86_400
# What a front drops from an answer it relays, so only its own policy speaks.
RESPONSE_HEADER_NAMES = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
    }
)
_VARY = (("vary", "Origin"),)


def is_preflight(method: str, origin: str | None, request_method: str | None) -> bool:
    """Whether a request is a browser's CORS preflight rather than a plain OPTIONS."""
    return method == "OPTIONS" and bool(origin) and bool(request_method)


class CorsPolicy:
    """The CORS answers for one set of allowed origins, methods and request headers."""

    def __init__(
        self,
        allowed_origins: Iterable[str],
        *,
        methods: Sequence[str] = MEDIA_METHODS,
        request_headers: Sequence[str] = MEDIA_REQUEST_HEADERS,
        exposed_headers: Sequence[str] = MEDIA_EXPOSED_HEADERS,
        max_age_seconds: int = MAX_AGE_SECONDS,
    ) -> None:
        origins = [o.rstrip("/") for o in allowed_origins]
        self.any_origin = ANY_ORIGIN in origins
        self.methods = frozenset(m.upper() for m in methods)
        self.request_headers = frozenset(h.lower() for h in request_headers)
        exposed = (("access-control-expose-headers", ", ".join(exposed_headers)),)
        preflight = (
            ("access-control-allow-methods", ", ".join(methods)),
            ("access-control-allow-headers", ", ".join(request_headers)),
            ("access-control-max-age", str(max_age_seconds)),
        )
        if self.any_origin:
            allow: Headers = (("access-control-allow-origin", ANY_ORIGIN),)
            self._actual: dict[str, Headers] = {}
            self._preflight: dict[str, Headers] = {}
            self._other: Headers = allow + exposed
            self._other_preflight: Headers = allow + preflight
            self._no_origin: Headers = ()
        else:
            self._actual = {
                o: (("access-control-allow-origin", o), *exposed, *_VARY) for o in origins
            }
            self._preflight = {
                o: (("access-control-allow-origin", o), *preflight, *_VARY) for o in origins
            }
            self._other = self._other_preflight = self._no_origin = _VARY
        self._actual_bytes = {o.encode("latin-1"): _lines(h) for o, h in self._actual.items()}
        self._other_bytes = _lines(self._other)
        self._no_origin_bytes = _lines(self._no_origin)

    def actual(self, origin: str | None) -> Headers:
        """The headers to add to a GET/HEAD answer for a request from ``origin``."""
        if not origin:
            return self._no_origin
        return self._actual.get(origin, self._other)

    def actual_bytes(self, origin: bytes | None) -> bytes:
        """``actual`` as header lines (``name: value\\r\\n``) for a hand-written front."""
        if not origin:
            return self._no_origin_bytes
        return self._actual_bytes.get(origin, self._other_bytes)

    def preflight(self, origin: str, request_method: str, request_headers: str | None) -> Headers:
        """The headers of the 204 answering a preflight; no CORS headers when it is refused."""
        allowed = self._preflight.get(origin, self._other_preflight)
        if request_method.upper() not in self.methods:
            return self._no_origin
        if request_headers:
            asked = {h.strip().lower() for h in request_headers.split(",")} - {""}
            if not asked <= self.request_headers:
                return self._no_origin
        return allowed


def _lines(headers: Headers) -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers)


def _raw(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


class CorsMiddleware:
    """Pure ASGI CORS for an app: the policy of the first matching path prefix applies.

    Preflights are answered here with a 204; a path no prefix matches passes untouched.
    """

    def __init__(self, app: ASGIApp, policies: Sequence[tuple[str, CorsPolicy]]) -> None:
        self.app = app
        self.policies = policies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        policy = next((p for prefix, p in self.policies if path.startswith(prefix)), None)
        if policy is None:
            await self.app(scope, receive, send)
            return
        origin = request_method = request_headers = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                request_method = value.decode("latin-1")
            elif name == b"access-control-request-headers":
                request_headers = value.decode("latin-1")
        if is_preflight(scope["method"], origin, request_method):
            assert origin is not None and request_method is not None
            headers = policy.preflight(origin, request_method, request_headers)
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [*_raw(headers), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        extra = _raw(policy.actual(origin))
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept: list[Any] = [
                    (n, v)
                    for n, v in message.get("headers", [])
                    if n.decode("latin-1").lower() not in RESPONSE_HEADER_NAMES
                ]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_cors)
