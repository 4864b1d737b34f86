"""The object route without a framework: verify, look up, answer.

Serving a cached object is the edge's whole job, so this path skips routing, dependency
injection and response classes; everything else (health, metrics, the purge API) goes to the
FastAPI app behind it. ``answer`` decides the response and ``services.edge.rsgi`` sends it
under Granian. The credential check and the conditional-GET table are the platform's own
(``shared.core.signing``, ``shared.http.ranges``), the same the origin runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from services.edge.metrics import TALLY
from services.edge.service import Edge, KnownMissing, TooLarge
from shared.core.errors import AppError
from shared.core.signing import DELIVERY_PREFIX, Credentials
from shared.http.cors import CorsPolicy, is_preflight
from shared.http.ranges import RequestHeaders, evaluate

PREFIX = DELIVERY_PREFIX
CHUNK_BYTES = 1024 * 1024
_RELAYED_HEADERS = (
    "content-type",
    "content-length",
    "content-range",
    "etag",
    "last-modified",
    "cache-control",
    "accept-ranges",
)


@dataclass(slots=True)
class Reply:
    """A response for a server adapter to send.

    The body is ``body``, or bytes ``start..end`` (inclusive) of the file at ``path``, or the
    origin stream ``relay`` (closed with ``close``). ``result`` labels the bytes-served metric.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    result: str = ""
    path: str | None = None
    start: int = 0
    end: int = -1
    relay: httpx.Response | None = None
    close: Callable[[], Awaitable[None]] | None = None


async def answer(
    edge: Edge,
    credentials: Credentials,
    method: str,
    path: str,
    query: str,
    headers: RequestHeaders,
) -> Reply:
    """The response to ``method path?query`` under ``/origin/``."""
    base = [("x-edge-id", edge.edge_id)]
    if method not in ("GET", "HEAD"):
        return _not_allowed(base)
    try:
        key, _, by_token = credentials.check(path, query, time.time())
    except AppError as exc:
        TALLY.results["denied" if exc.status == 403 else "error"] += 1
        return _error(exc, base)
    if not by_token and key.endswith(".m3u8"):
        # A query-signed viewer needs every child URI signed for them: the origin's own copy.
        return await _relay(edge, key, headers, base, signed_playlist=True)
    try:
        served = await edge.get(key)
    except TooLarge:
        return await _relay(edge, key, headers, base)
    except KnownMissing as exc:
        # A 404 the edge remembers: answered from its cache, like nginx's cached 404s.
        TALLY.results["negative"] += 1
        return _error(exc, [*base, ("x-cache", "HIT")])
    except AppError as exc:
        TALLY.results["error"] += 1
        return _error(exc, [*base, ("x-cache", "MISS")])
    result = served.result.lower()
    TALLY.results[result] += 1
    entry = served.entry
    out = [
        *base,
        ("x-cache", served.result),
        ("age", str(int(entry.age(time.time())))),
        ("accept-ranges", "bytes"),
    ]
    if entry.etag:
        out.append(("etag", entry.etag))
    if entry.last_modified:
        out.append(("last-modified", entry.last_modified))
    if entry.cache_control:
        out.append(("cache-control", entry.cache_control))
    size = entry.size
    try:
        status, byte_range = evaluate(headers, size, entry.etag, entry.last_modified)
    except AppError as exc:
        return _error(exc, out)
    if status == 304:
        return Reply(304, out)
    start, end = 0, size - 1
    if byte_range is not None:
        start, end = byte_range.start, byte_range.end
        out.append(("content-range", byte_range.content_range(size)))
    length = max(0, end - start + 1)
    out.append(("content-type", entry.content_type))
    out.append(("content-length", str(length)))
    if method == "HEAD" or length == 0:
        return Reply(status, out)
    TALLY.served_bytes[result] += length
    whole = await edge.hot_body(served)
    if whole is None:
        path_on_disk = str(edge.disk.body_path(key))
        return Reply(status, out, result=result, path=path_on_disk, start=start, end=end)
    return Reply(status, out, whole if length == len(whole) else whole[start : end + 1], result)


async def _relay(
    edge: Edge,
    key: str,
    headers: RequestHeaders,
    base: list[tuple[str, str]],
    *,
    signed_playlist: bool = False,
) -> Reply:
    """Stream an object the edge does not store straight from the origin."""
    try:
        response, close = await edge.relay(
            key, headers.get("range"), signed_playlist=signed_playlist
        )
    except AppError as exc:
        TALLY.results["error"] += 1
        return _error(exc, [*base, ("x-cache", "PASS")])
    TALLY.results["pass"] += 1
    out = [*base, ("x-cache", "PASS")]
    for name in _RELAYED_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            out.append((name, value))
    return Reply(response.status_code, out, result="pass", relay=response, close=close)


def preflight(edge: Edge, cors: CorsPolicy, headers: RequestHeaders) -> Reply:
    """The answer to OPTIONS: a CORS preflight's 204, or the 405 of any other method."""
    base = [("x-edge-id", edge.edge_id)]
    origin = headers.get("origin")
    request_method = headers.get("access-control-request-method")
    if not is_preflight("OPTIONS", origin, request_method):
        return _not_allowed(base)
    assert origin is not None and request_method is not None
    asked = headers.get("access-control-request-headers")
    return Reply(204, [*base, *cors.preflight(origin, request_method, asked)])


def _not_allowed(base: list[tuple[str, str]]) -> Reply:
    body = {"error": "method_not_allowed", "detail": "objects are read with GET or HEAD"}
    return _json(405, body, [*base, ("allow", "GET, HEAD")])


def unexpected(edge: Edge) -> Reply:
    """The answer to a request that failed unexpectedly: the origin's 500, nothing internal."""
    return _error(AppError("an unexpected error occurred"), [("x-edge-id", edge.edge_id)])


def _json(status: int, body: dict[str, Any], headers: list[tuple[str, str]]) -> Reply:
    # Rendered as the origin's error handler renders it, so both send the same bytes.
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Reply(
        status,
        [
            *headers,
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
        ],
        payload,
    )


def _error(exc: AppError, headers: list[tuple[str, str]]) -> Reply:
    keep = [(k, v) for k, v in headers if k not in ("cache-control", "etag", "last-modified")]
    return _json(exc.status, exc.body(), keep + [(k.lower(), v) for k, v in exc.headers.items()])
