"""The network impairment proxy on loopback: delay, bandwidth, stalls and resets hold to their
settings (within the 10% the load tests rely on), each direction on its own.

Settings are large next to scheduling noise on a loaded machine (200 ms, 4 MB/s over 2 s), and
every measurement is taken against the setting, not against a run without the proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import itertools
import queue
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from load_tests.impair import MIB, Direction, Impairment, Proxy, build_parser, parse_bytes
from tests.support.polling import wait_for
from tests.support.ports import free_port

TOLERANCE = 0.10
Address = tuple[str, int]
Handler = Callable[[socket.socket], Any]


@contextmanager
def tcp_server(handler: Handler) -> Iterator[tuple[Address, queue.Queue[Any]]]:
    """A loopback server running ``handler`` on each connection in a thread of its own; what
    each returns (or raises) lands in the queue, in the order connections end."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    listener.settimeout(0.1)
    results: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                results.put(handler(conn))
            except Exception as exc:
                results.put(exc)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2], results
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def connect(proxy: Proxy, *, receive_buffer: int = 0) -> socket.socket:
    """A client connection to ``proxy``, bounded so that a hang fails instead of waiting
    (``receive_buffer``: the socket's receive buffer, set before connecting)."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(15)
    sock.connect((proxy.host, proxy.port))
    return sock


def receive_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until EOF, and when its last byte arrived."""
    parts = []
    last = time.monotonic()
    while chunk := sock.recv(1 << 16):
        parts.append(chunk)
        last = time.monotonic()
    return b"".join(parts), last


def receive_until_reset(sock: socket.socket) -> tuple[int, BaseException | None]:
    """How many bytes came before the connection ended, and the error it ended with."""
    received = 0
    try:
        while chunk := sock.recv(1 << 16):
            received += len(chunk)
    except OSError as exc:
        return received, exc
    return received, None


def send_and_close(data: bytes, sock: socket.socket) -> float:
    """Send ``data`` then EOF; when sending began."""
    started = time.monotonic()
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    return started


def send_paced(count: int, gap: float, sock: socket.socket) -> list[float]:
    """``count`` 8-byte messages ``gap`` apart; when each was sent."""
    sent = []
    for n in range(count):
        sent.append(time.monotonic())
        sock.sendall(n.to_bytes(8, "big"))
        time.sleep(gap)
    return sent


def receive_timed(count: int, sock: socket.socket) -> list[float]:
    """When each of ``count`` 8-byte messages was complete."""
    arrived: list[float] = []
    buffered = 0
    while len(arrived) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "the stream ended early"
        buffered += len(chunk)
        arrived.extend([time.monotonic()] * (buffered // 8 - len(arrived)))
    return arrived


def within(measured: float, setting: float) -> bool:
    """``measured`` is within the tolerance of ``setting``."""
    return abs(measured - setting) <= TOLERANCE * setting


def assert_delays(sent: list[float], arrived: list[float], setting_ms: float) -> None:
    """No message came early, and their median delay is the setting (a busy machine may wake
    a receiver late now and then; that is not the proxy's delay)."""
    delays = [(a - s) * 1000 for s, a in zip(sent, arrived, strict=True)]
    assert min(delays) >= (1 - TOLERANCE) * setting_ms, delays
    assert within(statistics.median(delays), setting_ms), delays


def exchange(side: str, direction: Direction, sender: Handler, receiver: Handler) -> Any:
    """``sender`` and ``receiver`` at either end of a proxy impairing ``side`` ("up": the
    client sends) with ``direction``: what each returned, and the proxy."""
    impairment = Impairment(up=direction) if side == "up" else Impairment(down=direction)
    with tcp_server(receiver if side == "up" else sender) as (upstream, results):
        with impairment.running(upstream) as proxy, connect(proxy) as client:
            mine = sender(client) if side == "up" else receiver(client)
            theirs = results.get(timeout=15)
    return (mine, theirs, proxy) if side == "up" else (theirs, mine, proxy)


def test_without_impairment_the_bytes_pass_unchanged() -> None:
    data = random.Random(1).randbytes(50 * MIB)

    def echo(sock: socket.socket) -> None:
        while chunk := sock.recv(1 << 16):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)

    with tcp_server(echo) as (upstream, _), Impairment().running(upstream) as proxy:
        with connect(proxy) as client:
            sender = threading.Thread(target=send_and_close, args=(data, client))
            sender.start()
            echoed, _ = receive_all(client)
            sender.join()
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(data).hexdigest()
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(data)
    assert proxy.stats.connections == 1 and proxy.stats.resets == 0


@pytest.mark.parametrize("side", ["up", "down"])
def test_one_way_delay_is_the_setting_and_does_not_serialize(side: str) -> None:
    """Messages 30 ms apart each take the delay: they overlap in the delay line."""
    delay_ms, count, gap = 200, 10, 0.03
    sender, receiver = partial(send_paced, count, gap), partial(receive_timed, count)
    sent, arrived, _ = exchange(side, Direction(delay_ms=delay_ms), sender, receiver)
    assert_delays(sent, arrived, delay_ms)


def test_the_other_direction_is_not_delayed() -> None:
    impairment = Impairment(down=Direction(delay_ms=200))
    with tcp_server(partial(receive_timed, 5)) as (upstream, results):
        with impairment.running(upstream) as proxy, connect(proxy) as client:
            sent = send_paced(5, 0.03, client)
            arrived = results.get(timeout=10)
    assert statistics.median(a - s for s, a in zip(sent, arrived, strict=True)) < 0.2 * TOLERANCE


@pytest.mark.parametrize("side", ["up", "down"])
def test_bandwidth_is_the_setting(side: str) -> None:
    rate, size = 4_000_000, 8_000_000  # 2 s
    data = random.Random(2).randbytes(size)
    direction = Direction(rate_bytes_per_second=rate)
    started, (received, finished), _ = exchange(
        side, direction, partial(send_and_close, data), receive_all
    )
    assert received == data
    measured = size / (finished - started)
    assert within(measured, rate), f"{measured:,.0f} B/s for a {rate:,} B/s setting"


def test_delay_and_bandwidth_add_up() -> None:
    """A 200 ms, 4 MB/s path carries 4 MB in 1.2 s, as a link would (not 200 ms per chunk)."""
    rate, size, delay = 4_000_000, 4_000_000, 0.2
    impairment = Impairment(down=Direction(delay_ms=delay * 1000, rate_bytes_per_second=rate))
    data = random.Random(3).randbytes(size)
    with tcp_server(partial(send_and_close, data)) as (upstream, results):
        with impairment.running(upstream) as proxy, connect(proxy) as client:
            received, finished = receive_all(client)
            started = results.get(timeout=10)
    assert received == data
    assert within(finished - started, delay + size / rate)


@pytest.mark.parametrize("side", ["up", "down"])
def test_reset_comes_at_exactly_the_configured_byte(side: str) -> None:
    """The receiver gets exactly N bytes then a reset; the sender sees the reset too."""
    reset_after = 300_001
    data = random.Random(4).randbytes(MIB)

    def send_then_listen(sock: socket.socket) -> BaseException | None:
        try:
            sock.sendall(data)
        except OSError as exc:
            return exc
        return receive_until_reset(sock)[1]

    direction = Direction(reset_after_bytes=reset_after)
    sender_error, (received, receiver_error), proxy = exchange(
        side, direction, send_then_listen, receive_until_reset
    )
    assert received == reset_after
    assert isinstance(receiver_error, ConnectionResetError)
    assert isinstance(sender_error, (ConnectionResetError, BrokenPipeError))
    assert proxy.stats.resets == 1
    assert proxy.connections[0].reset_by == side
    assert getattr(proxy.connections[0], f"bytes_{side}") == reset_after


def test_a_reset_waits_until_a_slow_reader_took_every_byte_before_it() -> None:
    """The proxy has written all N bytes while the client reads none and its small buffer
    holds only part of them: the reset waits for the client to take the rest."""
    reset_after = 300_001
    impairment = Impairment(down=Direction(reset_after_bytes=reset_after))
    data = random.Random(4).randbytes(MIB)
    with tcp_server(partial(send_and_close, data)) as (upstream, _):
        with impairment.running(upstream) as proxy:
            with connect(proxy, receive_buffer=32 * 1024) as client:
                wait_for(
                    lambda: proxy.connections and proxy.connections[0].bytes_down == reset_after,
                    timeout=10,
                    interval=0.01,
                    what="the proxy to write every byte before the reset",
                )
                received, error = receive_until_reset(client)
    assert received == reset_after
    assert isinstance(error, ConnectionResetError)


def _reset_points(seed: int, connections: int = 4) -> list[int]:
    """Bytes each of ``connections`` downloads of 4 MiB got before a random reset."""
    impairment = Impairment(down=Direction(reset_probability_per_mib=0.75), seed=seed)
    data = random.Random(5).randbytes(4 * MIB)

    def source(sock: socket.socket) -> None:
        try:
            send_and_close(data, sock)
        except OSError:
            return

    points = []
    with tcp_server(source) as (upstream, _), impairment.running(upstream) as proxy:
        for _ in range(connections):
            with connect(proxy) as client:
                received, error = receive_until_reset(client)
            assert isinstance(error, ConnectionResetError)
            points.append(received)
    assert proxy.stats.resets == connections
    return points


def test_random_resets_replay_with_the_same_seed() -> None:
    first = _reset_points(seed=11)
    assert _reset_points(seed=11) == first
    assert len(set(first)) == len(first)  # each connection draws its own byte
    assert _reset_points(seed=12) != first


def test_stalls_pause_the_stream_for_the_set_time() -> None:
    """At 4 MB/s with a 0.8 s stall every 1.5 s, the stream stops 1.5 s in, for 0.8 s."""
    every, length, rate, size = 1.5, 0.8, 4_000_000, 7_000_000
    impairment = Impairment(
        down=Direction(rate_bytes_per_second=rate, stall_every_seconds=every, stall_seconds=length)
    )
    data = random.Random(6).randbytes(size)
    with tcp_server(partial(send_and_close, data)) as (upstream, _):
        with impairment.running(upstream) as proxy, connect(proxy) as client:
            opened = time.monotonic()
            arrivals, received = [], 0
            while chunk := client.recv(1 << 16):
                received += len(chunk)
                arrivals.append(time.monotonic())
    assert received == size
    gap, resumed = next((b - a, b) for a, b in itertools.pairwise(arrivals) if b - a > length / 2)
    assert within(gap, length), gap
    assert within(resumed - opened, every + length), resumed - opened


def test_an_http_client_through_the_proxy(tmp_path: Path) -> None:
    """httpx fetches a file from Python's HTTP server over a 100 ms, 4 MB/s path."""
    body = random.Random(7).randbytes(2_000_000)
    (tmp_path / "segment.m4s").write_bytes(body)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    impairment = Impairment(down=Direction(delay_ms=100, rate_bytes_per_second=4_000_000))
    try:
        with impairment.running(("127.0.0.1", server.server_port)) as proxy:
            started = time.monotonic()
            response = httpx.get(f"http://{proxy.address}/segment.m4s", timeout=15)
            elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200 and response.content == body
    # The HTTP server and client add their own time on a busy machine: only the floor is exact.
    assert elapsed >= (1 - TOLERANCE) * (0.1 + len(body) / 4_000_000), elapsed
    assert proxy.stats.bytes_down > len(body)


async def test_proxies_chain_in_one_event_loop() -> None:
    """Two proxies served from one loop, one after the other: their delays add up."""
    delay_ms, count = 100, 6
    impairment = Impairment(down=Direction(delay_ms=delay_ms))
    with tcp_server(partial(send_paced, count, 0.03)) as (upstream, results):
        async with impairment.serve(upstream) as near:
            async with impairment.serve((near.host, near.port)) as far:
                reader, writer = await asyncio.open_connection(far.host, far.port)
                arrived = []
                for _ in range(count):
                    await asyncio.wait_for(reader.readexactly(8), timeout=10)
                    arrived.append(time.monotonic())
                writer.close()
                sent = await asyncio.to_thread(results.get, timeout=10)
    assert_delays(sent, arrived, 2 * delay_ms)
    assert near.stats.bytes_down == far.stats.bytes_down == 8 * count


def test_the_command_explains_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for side in ("up", "down"):
        for setting in ("delay-ms", "rate", "stall-every", "stall-for", "reset-after"):
            assert f"--{side}-{setting}" in text
        assert f"--{side}-reset-probability" in text
    args = build_parser().parse_args(
        ["--listen", "127.0.0.1:9000", "--upstream", "127.0.0.1:8001", "--down-rate", "2MB"]
    )
    assert args.listen == ("127.0.0.1", 9000) and args.down_rate == 2_000_000


@pytest.mark.parametrize(
    ("text", "count"),
    [("500000", 500_000), ("64KiB", 65_536), ("2MB", 2_000_000), ("8Mbit", 1_000_000)],
)
def test_sizes_take_units(text: str, count: int) -> None:
    assert parse_bytes(text) == count


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="shorter"):
        Direction(stall_every_seconds=1, stall_seconds=1)
    with pytest.raises(ValueError, match="probability"):
        Direction(reset_probability_per_mib=1.5)


def test_a_rate_set_while_a_connection_is_open_applies_to_it() -> None:
    """A download at 1 MB/s speeds up to 4 MB/s when the rate is set mid-transfer."""
    slow, fast, switch_at, size = 1_000_000, 4_000_000, 1_000_000, 7_000_000
    impairment = Impairment(down=Direction(rate_bytes_per_second=slow))
    data = random.Random(8).randbytes(size)
    with tcp_server(partial(send_and_close, data)) as (upstream, results):
        with impairment.running(upstream) as proxy, connect(proxy) as client:
            received = bytearray()
            while len(received) < switch_at:
                received += client.recv(1 << 16)
            switched, before = time.monotonic(), len(received)
            proxy.set_rate("down", fast)
            rest, finished = receive_all(client)
            started = results.get(timeout=10)
    assert bytes(received) + rest == data
    assert within(before / (switched - started), slow)
    assert within(len(rest) / (finished - switched), fast)
    with pytest.raises(ValueError, match="negative"):
        proxy.set_rate("down", -1)
