"""What the two per-request hot paths cost in Python alone: a redirect, and a proxied segment.

Each request is handed to the server's connection object as the event loop hands over what it
reads, and the answer goes to a stub transport that only counts what is written, so no socket,
event loop or kernel time is in the figure: only the parsing, the decision, the metrics and the
answer's bytes. ``bench_redirect`` and ``bench_balancer`` measure the whole path against nginx
and haproxy; this splits off the part the Python code decides.

- redirect: ``GET /?video=<url>`` on the redirector's connection (the cached-URL case, as a
  popular video's viewers make it);
- proxy: ``GET`` of a 64 KiB segment through the balancer's viewer connection, a pooled backend
  connection answering with an edge's cache-hit head and the body in two reads.

    .venv/bin/python -m load_tests.hotpaths --requests 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from services.balancer.front import Front, ViewerConnection
from services.balancer.service import Balancer
from services.balancer.settings import BackendSpec
from services.balancer.settings import Settings as BalancerSettings
from services.balancer.upstream import Address, Upstream
from services.redirector.front import RedirectConnection
from services.redirector.service import Redirector
from services.redirector.settings import Settings as RedirectorSettings
from shared.http.h1 import Listener

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
REDIRECT = f"GET /?video={quote(VIDEO, safe='')} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
SEGMENT = b"GET /origin/videos/v/hls/720p/seg_00001.m4s?exp=1&sig=ab HTTP/1.1\r\nHost: x\r\n\r\n"
BODY_BYTES = 64 * 1024
# What an edge answers for a cache hit, as the balancer reads it.
EDGE_HEAD = (
    b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Dec 2026 09:00:00 GMT\r\nserver: granian\r\n"
    b"content-type: video/iso.segment\r\ncontent-length: %d\r\n"
    b'cache-control: public, max-age=31536000, immutable\r\netag: "5d41402abc4b2a76"\r\n'
    b"accept-ranges: bytes\r\nx-cache: HIT\r\nx-edge: edge-1\r\n"
    b"last-modified: Sun, 06 Dec 2026 08:00:00 GMT\r\n\r\n" % BODY_BYTES
)


class StubTransport:
    """Takes what a connection writes and counts it; sends nothing."""

    def __init__(self) -> None:
        self.writes = 0
        self.written = 0
        self.first = b""

    def write(self, data: bytes) -> None:
        self.writelines((data,))

    def writelines(self, parts: Sequence[bytes]) -> None:
        if not self.writes:
            self.first = b"".join(parts)
        self.writes += 1
        self.written += sum(len(part) for part in parts)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return False


def per_request_us(step: Callable[[], None], requests: int, rounds: int) -> float:
    """The best round's microseconds per call of ``step`` (the least disturbed by neighbours)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            step()
        best = min(best, time.perf_counter() - started)
    return best / requests * 1e6


async def redirect_cost(requests: int, rounds: int) -> tuple[float, StubTransport]:
    settings = RedirectorSettings(
        redirector_origin_hosts=("*.origin-cluster",), redirector_cdn_host="cdn.test"
    )
    listener = Listener(settings.http_limits)
    listener.start()
    conn = RedirectConnection(listener, None, Redirector(settings), {})
    transport = StubTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    request = REDIRECT.encode()
    try:
        return per_request_us(lambda: conn.data_received(request), requests, rounds), transport
    finally:
        listener.stop()


async def proxy_cost(requests: int, rounds: int) -> tuple[float, StubTransport]:
    backends = [BackendSpec(url=f"http://127.0.0.1:{9001 + i}", name=f"b{i}") for i in range(2)]
    balancer = Balancer(BalancerSettings(balancer_backends=backends))
    front = Front(
        balancer.proxy,
        balancer.connections,
        Address(unix_path="\0hotpaths"),
        frozenset(),
        balancer.settings.http_limits,
    )
    front.listener.start()
    # Kept-alive backend connections, as a warm pool holds them.
    connections = balancer.connections
    for address in balancer.proxy.addresses.values():
        upstream = Upstream(address, connections)
        upstream.connection_made(StubTransport())  # type: ignore[arg-type]
        connections.idle.setdefault(address, []).append(upstream)
    viewer: ViewerConnection = front.protocol()
    transport = StubTransport()
    viewer.connection_made(transport)  # type: ignore[arg-type]
    body = os.urandom(BODY_BYTES)
    first, rest = EDGE_HEAD + body[:16384], body[16384:]

    def one() -> None:
        viewer.data_received(SEGMENT)
        exchange = viewer.active
        assert exchange is not None and exchange.conn is not None
        backend = exchange.conn
        backend.data_received(first)
        backend.data_received(rest)

    try:
        return per_request_us(one, requests, rounds), transport
    finally:
        front.listener.stop()
        await balancer.session.close()


async def measure(requests: int, rounds: int) -> dict[str, float]:
    redirect, _ = await redirect_cost(requests, rounds)
    # A proxied request moves 64 KiB: fewer of them give as steady a figure.
    proxy, _ = await proxy_cost(max(1, requests // 4), rounds)
    return {"redirect_us": redirect, "proxy_us": proxy}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.hotpaths",
        description="Python's own cost per request on the redirect and proxy hot paths.",
    )
    parser.add_argument("--requests", type=int, default=100_000, help="Redirects per round")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds; the best one counts")
    args = parser.parse_args(argv)
    costs = asyncio.run(measure(args.requests, args.rounds))
    print(f"redirect: {costs['redirect_us']:.2f} us of Python per request")
    print(f"proxy (64 KiB segment): {costs['proxy_us']:.2f} us of Python per request")


if __name__ == "__main__":
    main()
