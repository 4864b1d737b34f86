"""The edge under Granian's RSGI interface: objects answered natively, the rest through FastAPI.

RSGI hands a response to Granian in one call (``response_bytes`` for a body held in memory,
``response_file_range`` for one read from disk by Granian itself), where ASGI costs a message
dictionary, an await and a copy per piece. Health, metrics and the admin API are rare requests:
they go through a small bridge to the FastAPI app, whose lifespan runs in Granian's worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian.rsgi import Scope

from services.edge.hotpath import CHUNK_BYTES, PREFIX, Reply, answer, preflight, unexpected
from services.edge.metrics import TALLY
from services.edge.service import Edge
from shared.core.signing import Credentials, Signer
from shared.http.cors import CorsPolicy

log = logging.getLogger(__name__)


class EdgeRSGI:
    """Serves ``/origin/...`` itself and bridges every other request to ``app``."""

    def __init__(self, app: FastAPI, signer: Signer, cors: CorsPolicy) -> None:
        self.app = app
        self._cors = cors
        self._credentials = Credentials(signer)
        self._lifespan: AbstractAsyncContextManager[Any] | None = None
        self._edge: Edge | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the app's clients and the cache before Granian takes requests."""
        self._lifespan = self.app.router.lifespan_context(self.app)
        loop.run_until_complete(self._lifespan.__aenter__())
        self._edge = self.app.state.edge

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._lifespan is not None:
            loop.run_until_complete(self._lifespan.__aexit__(None, None, None))

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        if not scope.path.startswith(PREFIX):
            TALLY.fold()
            await bridge(self.app, scope, proto)
            return
        assert self._edge is not None
        started = time.perf_counter()
        method = scope.method
        headers = scope.headers
        TALLY.in_progress += 1
        status = 500
        try:
            try:
                if method == "OPTIONS":
                    reply = preflight(self._edge, self._cors, headers)
                else:
                    reply = await answer(
                        self._edge,
                        self._credentials,
                        method,
                        scope.path,
                        scope.query_string,
                        headers,
                    )
                    # Precomputed per origin: a lookup and an extend, no header built here.
                    reply.headers.extend(self._cors.actual(headers.get("origin")))
            except Exception:
                log.exception("an object request failed")
                reply = unexpected(self._edge)
            status = reply.status
            if reply.relay is not None:
                await _send_relay(proto, reply, method)
            elif reply.path is not None:
                proto.response_file_range(
                    reply.status, reply.headers, reply.path, reply.start, reply.end + 1
                )
            else:
                proto.response_bytes(reply.status, reply.headers, reply.body)
        finally:
            TALLY.in_progress -= 1
            TALLY.request(method, status, time.perf_counter() - started)


async def _send_relay(proto: HTTPProtocol, reply: Reply, method: str) -> None:
    assert reply.relay is not None and reply.close is not None
    sent = 0
    try:
        transport = proto.response_stream(reply.status, reply.headers)
        if method == "GET":
            async for chunk in reply.relay.aiter_raw(CHUNK_BYTES):
                await transport.send_bytes(chunk)
                sent += len(chunk)
    except ProtocolClosed:
        pass  # the viewer went away; the origin stream is closed below
    finally:
        await reply.close()
        TALLY.served_bytes["pass"] += sent


async def bridge(app: Any, scope: Scope, proto: HTTPProtocol) -> None:
    """Run one request through an ASGI ``app`` and answer it with the collected response.

    Only for the edge's small endpoints: the whole response is gathered before it is sent.
    """
    body = await proto()
    answered = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    server_host, _, server_port = scope.server.rpartition(":")
    client_host, _, client_port = scope.client.rpartition(":")
    asgi_scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode(),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": (client_host, int(client_port or 0)),
        "server": (server_host, int(server_port or 0)),
    }
    try:
        await app(asgi_scope, receive, send)
    finally:
        answered.set()
    proto.response_bytes(status, headers, b"".join(chunks))
