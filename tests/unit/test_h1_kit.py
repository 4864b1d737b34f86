"""The HTTP/1.1 kit (``shared.http.h1``) over real sockets, in each front that uses it.

Every limit, deadline and ordering rule is checked against three fronts: a tiny one written on
the kit here, the redirector's and the balancer's (proxying to the tiny one).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from services.balancer.front import Front
from services.balancer.service import Balancer
from services.balancer.settings import BackendSpec
from services.balancer.settings import Settings as BalancerSettings
from services.balancer.upstream import Address
from services.redirector.app import build
from services.redirector.front import start as start_redirector
from services.redirector.settings import Settings as RedirectorSettings
from shared.http import h1
from shared.http.h1_limits import Limits
from tests.support.polling import eventually
from tests.support.ports import free_port

UNREACHABLE_DB = "postgresql+asyncpg://postgres@127.0.0.1:1/unused"
# Short deadlines, small bodies; the other limits are the defaults.
LIMITS = Limits(header_timeout_seconds=0.4, keep_alive_seconds=0.6, body_bytes=4096)
BIG = 16 * 1024 * 1024


class Echo(h1.Connection):
    """Answers ``GET <path>`` with the path at once; ``/later/...`` a little later; ``/big``."""

    def respond(self, request: h1.Request) -> bool:
        if request.target.startswith(b"/later/"):
            asyncio.get_running_loop().call_later(0.05, self._answer, request)
            return False
        self._answer(request, whole=True)
        return True

    def _answer(self, request: h1.Request, *, whole: bool = False) -> None:
        body = b"x" * BIG if request.target == b"/big" else request.target
        fields = b"content-length: %d\r\n" % len(body)
        date = self.listener.date
        self.write(h1.answer_bytes(200, fields, date, request.keep_alive, body))
        if not whole:
            self.done(request.keep_alive)


class Serving:
    """A listener on a port, and how to stop it."""

    def __init__(self, server: asyncio.Server, listener: h1.Listener, port: int) -> None:
        self.server = server
        self.listener = listener
        self.port = port

    async def close(self) -> None:
        self.server.close()
        await self.listener.drain(0)


async def open_echo(limits: Limits) -> Serving:
    listener = h1.Listener(limits)
    port = free_port()
    server = await listener.open(lambda: Echo(listener), "127.0.0.1", port)
    return Serving(server, listener, port)


@dataclass
class Served:
    """A front on a port: a request it answers at once, and two it answers in order."""

    port: int
    quick: bytes
    # A request answered later (an answer under way), then one answered at once, and what
    # each answer carries.
    later: bytes
    then: bytes
    marks: tuple[bytes, bytes]


def get(target: str, *extra: str) -> bytes:
    return "".join([f"GET {target} HTTP/1.1\r\nHost: t\r\n", *extra, "\r\n"]).encode()


@pytest.fixture(params=["kit", "redirector", "balancer"])
async def front(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    kind = request.param
    closers: list[Callable[[], Any]] = []
    try:
        if kind == "kit":
            echo = await open_echo(LIMITS)
            closers.append(echo.close)
            yield Served(echo.port, get("/q"), get("/later/one"), get("/two"), marks(kind))
        elif kind == "redirector":
            app = build(
                RedirectorSettings(
                    redirector_cdn_host="cdn.test",
                    redirector_ratio=2,
                    redirector_instance_id="unit-1",
                    database_url=UNREACHABLE_DB,
                )
            )
            running = await start_redirector(
                app, app.state.redirector, host="127.0.0.1", port=free_port(), limits=LIMITS
            )
            closers.append(running.close)
            video = "/?video=http://s1.origin-cluster/"
            yield Served(
                running.port, get(video + "q"), get("/whoami"), get(video + "two"), marks(kind)
            )
        else:
            backend = await open_echo(Limits())
            closers.append(backend.close)
            spec = BackendSpec(url=f"http://127.0.0.1:{backend.port}", name="echo")
            settings = BalancerSettings(balancer_backends=[spec])
            balancer = Balancer(settings)
            closers.append(balancer.stop)
            app_address = Address(unix_path="\0none")
            viewers = Front(balancer.proxy, balancer.connections, app_address, frozenset(), LIMITS)
            port = free_port()
            server = await viewers.listener.open(viewers.protocol, "127.0.0.1", port)
            closers.append(Serving(server, viewers.listener, port).close)
            yield Served(port, get("/q"), get("/later/one"), get("/two"), marks(kind))
    finally:
        for close in reversed(closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(0)


def marks(kind: str) -> tuple[bytes, bytes]:
    if kind == "redirector":
        return b'{"instance":"unit-1"}', b"/two\r\n"
    return b"/later/one", b"/two"


async def exchange(port: int, data: bytes, wait: float = 1.0) -> bytes:
    """Send raw bytes, read until the server closes or ``wait`` seconds of silence."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = await read_all(reader, wait)
    writer.close()
    return received


async def read_all(reader: asyncio.StreamReader, wait: float) -> bytes:
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), wait):
            received += chunk
    except TimeoutError:
        pass
    return received


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def refused(raw: bytes, status: int) -> dict[str, Any]:
    """The one JSON error answer in ``raw``, checked to close the connection."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert statuses(head) == [status], raw[:300]
    assert b"connection: close" in head and b"content-type: application/json" in head
    problem: dict[str, Any] = json.loads(body)
    assert set(problem) == {"error", "detail"}
    return problem


async def test_a_request_target_over_the_limit_is_414(front: Served) -> None:
    raw = await exchange(front.port, get("/" + "a" * (Limits.request_line_bytes + 1)))
    assert refused(raw, 414)["error"] == "uri_too_long"


async def test_too_many_or_too_big_headers_are_431(front: Served) -> None:
    many = [f"x-h{n}: v\r\n" for n in range(Limits.header_count + 1)]
    raw = await exchange(front.port, get("/", *many))
    assert refused(raw, 431)["error"] == "headers_too_large"
    raw = await exchange(front.port, get("/", "x-big: " + "a" * Limits.header_bytes + "\r\n"))
    assert refused(raw, 431)["error"] == "headers_too_large"


async def test_a_body_over_the_limit_is_413(front: Served) -> None:
    size = LIMITS.body_bytes + 1
    data = b"POST /config HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
    raw = await exchange(front.port, data + b"{" * size)
    assert refused(raw, 413)["error"] == "payload_too_large"


async def test_malformed_bytes_are_400(front: Served) -> None:
    for data in (b"BLAH\r\n\r\n", b"GET / HTTP/1.1\r\nHost t\r\n\r\n"):
        problem = refused(await exchange(front.port, data), 400)
        assert problem["error"] == "bad_request" and "malformed" in problem["detail"]


async def test_a_head_not_finished_in_time_is_408(front: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    started = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Half: ")
    raw = await read_all(reader, 5)
    took = time.monotonic() - started
    writer.close()
    assert refused(raw, 408)["error"] == "request_timeout"
    assert LIMITS.header_timeout_seconds <= took < 3, took


async def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(front: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(front.quick)
    head = await reader.readuntil(b"\r\n\r\n")
    assert statuses(head) in ([200], [302]) and b"connection: close" not in head
    answered = time.monotonic()
    rest = await asyncio.wait_for(reader.read(), 5)
    idle = time.monotonic() - answered
    writer.close()
    assert b"HTTP/1.1" not in rest
    assert LIMITS.keep_alive_seconds * 0.9 <= idle < 3, idle


async def test_pipelined_requests_are_answered_in_order(front: Served) -> None:
    raw = await exchange(front.port, front.later + front.then, wait=1.5)
    assert len(statuses(raw)) == 2, raw
    first, second = front.marks
    assert 0 <= raw.index(first) < raw.index(second)


async def test_an_answer_under_way_holds_back_the_ones_pipelined_behind_it() -> None:
    echo = await open_echo(LIMITS)
    try:
        requests = [get(f"/later/{n}" if n % 3 else f"/{n}") for n in range(40)]
        raw = await exchange(echo.port, b"".join(requests), wait=3)
    finally:
        await echo.close()
    order = [int(n) for n in re.findall(rb"/(\d+)(?=HTTP/1\.1|$)", raw)]
    assert order == list(range(40))


async def test_reading_pauses_while_the_client_does_not_take_the_answers() -> None:
    echo = await open_echo(LIMITS)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", echo.port, limit=2**20)
        writer.write(get("/big") + get("/after"))
        (conn,) = await until(lambda: list(echo.listener.connections), "the connection")
        await until(lambda: conn.writing_paused and conn.reading_paused, "reading to pause")
        received = bytearray()
        while not received.endswith(b"/after"):
            chunk = await asyncio.wait_for(reader.read(2**20), 5)
            assert chunk, "closed before the second answer"
            received += chunk
        writer.close()
    finally:
        await echo.close()
    assert statuses(bytes(received[:100]) + bytes(received[-200:])) == [200, 200]
    assert len(received) > BIG and not conn.writing_paused


async def test_a_header_trickled_over_many_reads_is_bounded_too() -> None:
    echo = await open_echo(Limits(header_timeout_seconds=30))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", echo.port)
        writer.write(b"GET / HTTP/1.1\r\nX-Long: ")
        # Each piece on its own: no single read, and no whole header, is over any limit.
        for _ in range(100):
            writer.write(b"a" * 1024)
            await writer.drain()
            await asyncio.sleep(0.002)
        raw = await read_all(reader, 2)
        writer.close()
    finally:
        await echo.close()
    assert refused(raw, 431)["error"] == "headers_too_large"


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    echo = await open_echo(LIMITS)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", echo.port)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started >= LIMITS.header_timeout_seconds
        writer.close()
    finally:
        await echo.close()


async def test_each_front_takes_its_limits_from_its_settings() -> None:
    knobs: dict[str, Any] = {
        "max_request_line_bytes": 1000,
        "max_headers": 7,
        "max_header_bytes": 2048,
        "max_body_bytes": 10,
        "header_timeout_seconds": 3,
        "keep_alive_seconds": 4,
    }
    expected = Limits(1000, 7, 2048, 10, 3, 4)
    redirector = RedirectorSettings(**{f"redirector_{k}": v for k, v in knobs.items()})
    balancer = BalancerSettings(**{f"balancer_{k}": v for k, v in knobs.items()})
    assert redirector.http_limits == balancer.http_limits == expected
    assert RedirectorSettings().http_limits == BalancerSettings().http_limits == Limits()


async def until(check: Callable[[], Any], what: str) -> Any:
    """The first truthy value of ``check()``, polled in the event loop."""

    async def poll() -> Any:
        return check()

    return await eventually(poll, within=5, what=what)
