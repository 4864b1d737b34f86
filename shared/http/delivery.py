"""Serve stored objects and generated bodies over HTTP, from Starlette routes or plain ASGI.

What every response gets right: single and suffix ``Range`` (206, or 416 with
``Content-Range: bytes */size``), ``If-Range``, ``HEAD``, ``ETag`` and ``Last-Modified`` with 304,
``Cache-Control`` chosen by the caller, the content type, and gzip for text bodies (playlists)
when the client accepts it. The decision (``plan_object``/``plan_body``) is separate from the
sending, so edges can reuse it with bytes that come from their own cache.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Scope, Send

from shared.http.metrics import HTTP_RESPONSE_BYTES
from shared.http.middleware import route_template
from shared.http.ranges import accepts_gzip, evaluate, http_date, not_modified
from shared.storage.base import ObjectInfo, ObjectStore

# Big enough that a typical HLS segment goes out in one read and one write.
SEND_CHUNK_BYTES = 4 * 1024 * 1024
GZIP_MIN_BYTES = 256
PATHSEND = "http.response.pathsend"


@dataclass
class Plan:
    """What to answer: status, headers, and which bytes of the object (``end`` inclusive)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    start: int = 0
    end: int = -1
    body: bytes | None = None  # set for generated bodies; objects are read from the store

    @property
    def length(self) -> int:
        return max(0, self.end - self.start + 1)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]


def _validators(etag: str, last_modified: datetime | None, cache_control: str) -> dict[str, str]:
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache_control}
    if last_modified is not None:
        headers["Last-Modified"] = http_date(last_modified)
    return headers


def plan_object(
    info: ObjectInfo,
    request_headers: Mapping[str, str],
    *,
    cache_control: str,
    extra_headers: Mapping[str, str] | None = None,
) -> Plan:
    """200, 206 or 304 for a stored object; raises RangeNotSatisfiable (416)."""
    headers = _validators(info.etag, info.last_modified, cache_control)
    headers["Accept-Ranges"] = "bytes"
    headers.update(extra_headers or {})
    status, byte_range = evaluate(request_headers, info.size, headers["ETag"], info.last_modified)
    if status == 304:
        return Plan(304, headers)
    headers["Content-Type"] = info.content_type
    plan = Plan(200, headers, 0, info.size - 1)
    if byte_range is not None:
        plan = Plan(206, headers, byte_range.start, byte_range.end)
        headers["Content-Range"] = byte_range.content_range(info.size)
    headers["Content-Length"] = str(plan.length)
    return plan


def body_etag(body: bytes) -> str:
    """A strong validator for a generated body."""
    return hashlib.blake2b(body, digest_size=12).hexdigest()


def plan_body(
    body: bytes,
    request_headers: Mapping[str, str],
    *,
    content_type: str,
    cache_control: str,
    etag: str | None = None,
    last_modified: datetime | None = None,
    compress: bool = True,
    extra_headers: Mapping[str, str] | None = None,
) -> Plan:
    """200 or 304 for a body built in memory (a playlist), gzipped when the client accepts it.

    Range is ignored for generated bodies, as RFC 9110 allows; they are small.
    """
    gzipped = compress and len(body) >= GZIP_MIN_BYTES and accepts_gzip(request_headers)
    tag = etag or body_etag(body)
    if gzipped:
        tag += "-gzip"  # each coding is its own representation with its own validator
    headers = _validators(tag, last_modified, cache_control)
    if compress:
        headers["Vary"] = "Accept-Encoding"
    headers.update(extra_headers or {})
    if not_modified(request_headers, headers["ETag"], last_modified):
        return Plan(304, headers)
    if gzipped:
        body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    return Plan(200, headers, 0, len(body) - 1, body)


async def send_plan(
    plan: Plan,
    send: Send,
    *,
    method: str,
    store: ObjectStore | None = None,
    key: str = "",
    pathsend: bool = False,
    route: str | None = None,
) -> None:
    """Send a plan over plain ASGI: the generated body, or the object's bytes from ``store``.

    With ``pathsend`` (the server offers the ``http.response.pathsend`` extension) a whole
    object of the filesystem store is handed to the server by path, which sends it without the
    bytes passing through Python.
    """
    await send(
        {"type": "http.response.start", "status": plan.status, "headers": plan.raw_headers()}
    )
    if method == "HEAD" or plan.status == 304 or plan.length == 0:
        await send({"type": "http.response.body", "body": b""})
        return
    if plan.body is not None:
        await send({"type": "http.response.body", "body": plan.body})
        return
    if store is None:
        raise ValueError("an object plan needs the store to read from")
    local = store.local_path(key) if pathsend and plan.status == 200 else None
    if local is not None:
        # Objects are written to a temporary file and renamed into place, never rewritten, so
        # the file at this path still has the size the plan announced.
        await send({"type": "http.response.pathsend", "path": str(local)})
        if route is not None:
            # The metrics middleware counts body messages only; these bytes never were one.
            HTTP_RESPONSE_BYTES.labels(route).inc(plan.length)
        return
    chunks = store.get_stream(key, plan.start, plan.end, chunk_size=SEND_CHUNK_BYTES)
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def send_object(
    store: ObjectStore,
    key: str,
    scope: Scope,
    send: Send,
    *,
    cache_control: str,
    extra_headers: Mapping[str, str] | None = None,
) -> None:
    """Answer a plain-ASGI GET or HEAD with the stored object (200, 206 or 304)."""
    info = await store.stat(key)
    plan = plan_object(
        info, Headers(scope=scope), cache_control=cache_control, extra_headers=extra_headers
    )
    pathsend = PATHSEND in (scope.get("extensions") or {})
    await send_plan(
        plan,
        send,
        method=scope["method"],
        store=store,
        key=key,
        pathsend=pathsend,
        route=route_template(scope),
    )


async def object_response(
    store: ObjectStore,
    key: str,
    request: Request,
    *,
    cache_control: str,
    extra_headers: Mapping[str, str] | None = None,
) -> Response:
    """A Starlette 200, 206 or 304 response for the object, streamed from the store."""
    info = await store.stat(key)
    plan = plan_object(
        info, request.headers, cache_control=cache_control, extra_headers=extra_headers
    )
    if request.method == "HEAD" or plan.status == 304 or plan.length == 0:
        return Response(status_code=plan.status, headers=plan.headers)
    return StreamingResponse(
        store.get_stream(key, plan.start, plan.end, chunk_size=SEND_CHUNK_BYTES),
        status_code=plan.status,
        headers=plan.headers,
    )
