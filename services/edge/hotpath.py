"""The object route without a framework: verify, look up, answer.

Serving a cached object is the edge's whole job, so this path skips routing, dependency
injection and response classes; everything else (health, metrics, the purge API) goes to the
FastAPI app behind it. ``answer`` decides the response and the server adapters only send it:
``services.edge.rsgi`` under Granian (the default), ``EdgeASGI`` below under uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

import httpx
from starlette.types import Receive, Scope, Send

from services.edge.metrics import TALLY
from services.edge.service import Edge, Served, TooLarge
from services.edge.store import read_range
from shared.core.errors import AppError, BadRequest
from shared.core.signing import Signer, split_token_path
from shared.http.ranges import parse_range
from shared.storage.base import check_key

PREFIX = "/origin/"
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


class Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


def viewer_key(signer: Signer, path: str, query_string: str) -> tuple[str, int]:
    """The cache key (object path) of a viewer's request and the expiry of its credential.

    Raises Forbidden for a missing, expired or forged credential, BadRequest for a bad path.
    """
    rest = path[len(PREFIX) :]
    token_path = split_token_path(rest)
    if token_path is not None:
        token, key = token_path
        check_key(key)
        signer.verify_token_path(token, key)
        return key, int(token.split(".", 2)[1])
    if rest.startswith("t/"):
        raise BadRequest("a path token must be followed by an object path")
    check_key(rest)
    query = parse_qs(query_string)
    exp = signer.verify(
        rest,
        query.get("exp", [None])[0],
        query.get("sig", [None])[0],
        query.get("kid", [None])[0],
    )
    return rest, exp


class Credentials:
    """Viewer credentials that verified, so that a URL a player repeats costs one HMAC.

    Only credentials that passed ``viewer_key`` are remembered, keyed by the exact path and
    query, and their expiry is checked again on every request: an altered, forged or expired
    URL never matches a live entry and is verified (and refused) in full.
    """

    def __init__(self, signer: Signer, max_entries: int = 8192) -> None:
        self.signer = signer
        self.max_entries = max_entries
        self._verified: dict[tuple[str, str], tuple[str, int]] = {}

    def key(self, path: str, query_string: str, now: float) -> str:
        """The cache key of a request whose credential is valid now; raises like ``viewer_key``."""
        request = (path, query_string)
        known = self._verified.get(request)
        if known is not None:
            if known[1] >= int(now):
                return known[0]
            del self._verified[request]
        key, exp = viewer_key(self.signer, path, query_string)
        if len(self._verified) >= self.max_entries:
            # Oldest first: dictionaries keep insertion order.
            del self._verified[next(iter(self._verified))]
        self._verified[request] = (key, exp)
        return key


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


def _not_modified(headers: Headers, served: Served) -> bool:
    entry = served.entry
    inm = headers.get("if-none-match")
    if inm is not None:
        if entry.etag is None:
            return False
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or entry.etag.removeprefix("W/") in tags
    ims = headers.get("if-modified-since")
    if ims and entry.last_modified:
        try:
            since = parsedate_to_datetime(ims)
            modified = parsedate_to_datetime(entry.last_modified)
        except (TypeError, ValueError):
            return False
        return modified <= since
    return False


async def answer(
    edge: Edge, credentials: Credentials, method: str, path: str, query: str, headers: Headers
) -> Reply:
    """The response to ``method path?query`` under ``/origin/``."""
    base = [("x-edge-id", edge.edge_id)]
    if method not in ("GET", "HEAD"):
        body = {"error": "method_not_allowed", "detail": "objects are read with GET or HEAD"}
        return _json(405, body, [*base, ("allow", "GET, HEAD")])
    try:
        key = credentials.key(path, query, time.time())
    except AppError as exc:
        TALLY.results["denied" if exc.status == 403 else "error"] += 1
        return _error(exc, base)
    try:
        served = await edge.get(key)
    except TooLarge:
        return await _relay(edge, key, headers, base)
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
    if _not_modified(headers, served):
        return Reply(304, out)
    size = entry.size
    status, start, end = 200, 0, size - 1
    range_header = headers.get("range")
    if range_header is not None:
        try:
            byte_range = parse_range(range_header, size)
        except AppError as exc:
            return _error(exc, out)
        if byte_range is not None:
            status, start, end = 206, byte_range.start, byte_range.end
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


async def _relay(edge: Edge, key: str, headers: Headers, base: list[tuple[str, str]]) -> Reply:
    """Stream an object too big to store straight from the origin."""
    try:
        response, close = await edge.relay(key, headers.get("range"))
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


def _json(status: int, body: dict[str, Any], headers: list[tuple[str, str]]) -> Reply:
    payload = json.dumps(body).encode()
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


class EdgeASGI:
    """Serves ``GET``/``HEAD /origin/...`` itself and hands every other request to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._credentials: Credentials | None = None

    @property
    def edge(self) -> Edge:
        edge: Edge = self.app.state.edge
        return edge

    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = Credentials(self.edge.signer)
        return self._credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            TALLY.fold()
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        TALLY.in_progress += 1
        status = 500
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            reply = await answer(
                self.edge,
                self.credentials(),
                method,
                scope["path"],
                scope["query_string"].decode("latin-1"),
                headers,
            )
            status = reply.status
            await self._send(send, reply, method)
        finally:
            TALLY.in_progress -= 1
            TALLY.request(method, status, time.perf_counter() - started)

    async def _send(self, send: Send, reply: Reply, method: str) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if reply.relay is not None:
            await self._send_relay(send, reply, method)
        elif reply.path is None:
            await send({"type": "http.response.body", "body": reply.body})
        else:
            for at in range(reply.start, reply.end + 1, CHUNK_BYTES):
                last = min(reply.end, at + CHUNK_BYTES - 1)
                chunk = await asyncio.to_thread(read_range, reply.path, at, last)
                more = last < reply.end
                await send({"type": "http.response.body", "body": chunk, "more_body": more})

    async def _send_relay(self, send: Send, reply: Reply, method: str) -> None:
        assert reply.relay is not None and reply.close is not None
        sent = 0
        try:
            if method == "GET":
                async for chunk in reply.relay.aiter_raw(CHUNK_BYTES):
                    sent += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await reply.close()
            TALLY.served_bytes["pass"] += sent
