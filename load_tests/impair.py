"""A network impairment proxy in user space: delay, bandwidth, stalls and resets per direction.

This machine's kernel has no netem, so bad networks are made here: a TCP proxy placed between a
client and any service. Each direction, client to service ("up") and service to client
("down"), has its own settings:

- one-way delay: each chunk is delivered ``delay_ms`` after it was read, in order. Chunks wait
  in a delay line while reading goes on, so delay and bandwidth add up as on a real link
  instead of one serializing the other.
- bandwidth: a token bucket with a burst of a few milliseconds of traffic, so that even short
  transfers take the time their size says. ``Proxy.set_rate`` changes it while connections
  are open, to play a bandwidth trace.
- stalls: every ``stall_every_seconds`` since the connection opened, nothing moves for
  ``stall_seconds``.
- resets: after exactly ``reset_after_bytes`` delivered bytes, or at a random byte where each MiB
  has ``reset_probability_per_mib`` of holding one. The byte is drawn from a seeded generator per
  connection and direction, so an experiment replays the same resets however reads are split.
  A reset waits until the peer's TCP has taken every byte before it, then closes both sockets
  with ``SO_LINGER`` 0: both peers see RST.

Three ways to use it::

    async with Impairment(down=Direction(delay_ms=75)).serve(("127.0.0.1", 8001)) as proxy:
        ...  # connect to proxy.port; several proxies may run in one loop
    with Impairment(up=Direction(rate_bytes_per_second=2_000_000)).running(upstream) as proxy:
        ...  # the same, on an event loop of its own thread, for synchronous code
    python -m load_tests.impair --listen 127.0.0.1:9000 --upstream 127.0.0.1:8001 \\
        --down-delay-ms 75 --down-rate 2MB
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import fcntl
import itertools
import logging
import math
import random
import re
import signal
import socket
import struct
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger("load_tests.impair")

# Reads are at most this big, so shaping, stalls and resets act on small pieces.
CHUNK_BYTES = 64 * 1024
MIB = 1024 * 1024
# What one direction holds in its delay line before it stops reading (netem has such a limit
# too): with a delay, a direction then carries at most this much per delay, like a TCP window.
QUEUE_BYTES = 16 * MIB
# The token bucket's burst, in seconds of traffic at the set rate (and never under one MTU).
BURST_SECONDS = 0.02
MIN_BURST_BYTES = 1500
# How long a reset waits for the peer to take the bytes before it, at most.
FLUSH_TIMEOUT_SECONDS = 10.0

Side = Literal["up", "down"]


@dataclass(frozen=True)
class Direction:
    """The impairment of one direction of every connection (all off by default)."""

    delay_ms: float = 0.0
    rate_bytes_per_second: float = 0.0  # 0: unlimited
    stall_every_seconds: float = 0.0  # 0: never stalls
    stall_seconds: float = 0.0
    reset_after_bytes: int | None = None
    reset_probability_per_mib: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.rate_bytes_per_second < 0:
            raise ValueError("delay and rate cannot be negative")
        if self.stall_seconds < 0 or self.stall_every_seconds < 0:
            raise ValueError("stall times cannot be negative")
        if self.stall_every_seconds and self.stall_seconds >= self.stall_every_seconds:
            raise ValueError("a stall must be shorter than the period it repeats with")
        if self.reset_after_bytes is not None and self.reset_after_bytes < 0:
            raise ValueError("reset_after_bytes cannot be negative")
        if not 0 <= self.reset_probability_per_mib <= 1:
            raise ValueError("reset_probability_per_mib is a probability, in [0, 1]")

    def reset_byte(self, rng: random.Random) -> int | None:
        """The delivered byte count at which this direction resets, if it ever does."""
        candidates = [self.reset_after_bytes]
        p = self.reset_probability_per_mib
        if p > 0:
            # The first MiB that draws a reset (geometric), then a byte inside it.
            mib = 0 if p >= 1 else int(math.log(1.0 - rng.random()) / math.log(1.0 - p))
            candidates.append(mib * MIB + rng.randrange(MIB))
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    def describe(self) -> str:
        """The settings that are on, for logs."""
        parts = []
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms:g} ms")
        if self.rate_bytes_per_second:
            parts.append(f"rate {self.rate_bytes_per_second:,.0f} B/s")
        if self.stall_every_seconds and self.stall_seconds:
            parts.append(f"stall {self.stall_seconds:g} s every {self.stall_every_seconds:g} s")
        if self.reset_after_bytes is not None:
            parts.append(f"reset after {self.reset_after_bytes:,} B")
        if self.reset_probability_per_mib:
            parts.append(f"reset p={self.reset_probability_per_mib:g}/MiB")
        return ", ".join(parts) or "none"


@dataclass
class ConnectionStats:
    """What one proxied connection carried and how it ended."""

    id: int
    bytes_up: int = 0
    bytes_down: int = 0
    reset_by: Side | None = None  # the direction whose setting reset it
    closed: bool = False


@dataclass
class ProxyStats:
    """Totals over every connection a proxy accepted."""

    connections: int = 0
    active: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0


@dataclass
class Proxy:
    """A listening proxy: where to connect, and its counters (live while it runs)."""

    host: str
    port: int
    stats: ProxyStats = field(default_factory=ProxyStats)
    connections: list[ConnectionStats] = field(default_factory=list)
    # The bandwidth of each direction now (0: unlimited), read by every connection as it goes.
    rates: dict[Side, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})

    @property
    def address(self) -> str:
        """``host:port`` to connect to."""
        return f"{self.host}:{self.port}"

    def set_rate(self, side: Side, rate_bytes_per_second: float) -> None:
        """Change one direction's bandwidth (0: unlimited) for every connection, open ones
        included, from their next piece on: a bandwidth trace played while viewers stream.
        Safe to call from any thread."""
        if rate_bytes_per_second < 0:
            raise ValueError("rate cannot be negative")
        self.rates[side] = rate_bytes_per_second


@dataclass(frozen=True)
class Impairment:
    """Settings for both directions; ``serve`` and ``running`` put them on a listening port."""

    up: Direction = Direction()
    down: Direction = Direction()
    seed: int | None = None

    @contextlib.asynccontextmanager
    async def serve(
        self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> AsyncIterator[Proxy]:
        """Listen on ``listen`` (port 0: any free one) and forward to ``upstream``."""
        server = _Server(self, upstream)
        listener = await asyncio.start_server(server.handle, *listen, limit=CHUNK_BYTES)
        host, port = listener.sockets[0].getsockname()[:2]
        rates: dict[Side, float] = {
            "up": self.up.rate_bytes_per_second,
            "down": self.down.rate_bytes_per_second,
        }
        server.proxy = Proxy(host, port, rates=rates)
        logger.info(
            "impairing %s:%s -> %s:%s; up: %s; down: %s",
            host,
            port,
            *upstream,
            self.up.describe(),
            self.down.describe(),
        )
        try:
            async with listener:
                yield server.proxy
        finally:
            await server.close()

    @contextlib.contextmanager
    def running(
        self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> Iterator[Proxy]:
        """``serve`` on an event loop of its own thread, for synchronous callers."""
        loop = new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="impair", daemon=True)
        thread.start()
        served = self.serve(upstream, listen)
        try:
            proxy = asyncio.run_coroutine_threadsafe(served.__aenter__(), loop).result()
            try:
                yield proxy
            finally:
                stopping = served.__aexit__(None, None, None)
                asyncio.run_coroutine_threadsafe(stopping, loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _ResetNow(Exception):
    """A direction reached its reset byte: the connection is to be reset."""

    def __init__(self, side: Side) -> None:
        super().__init__(side)
        self.side = side


class _Server:
    """Accepts connections and runs both directions of each."""

    def __init__(self, impairment: Impairment, upstream: tuple[str, int]) -> None:
        self.impairment = impairment
        self.upstream = upstream
        self.proxy = Proxy("", 0)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Proxy one accepted connection until both directions end or it is reset."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = ConnectionStats(next(self._ids))
        self.proxy.connections.append(conn)
        self.proxy.stats.connections += 1
        self.proxy.stats.active += 1
        try:
            await self._relay(conn, reader, writer)
        except asyncio.CancelledError:
            # The proxy is closing: the connection ends here, not as an error of asyncio's.
            if not self._closing:
                raise
        finally:
            conn.closed = True
            self.proxy.stats.active -= 1
            self._tasks.discard(task)

    async def _relay(
        self, conn: ConnectionStats, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        started = time.monotonic()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK_BYTES)
        except OSError as exc:
            logger.warning("connection %d: upstream %s:%s: %s", conn.id, *self.upstream, exc)
            _reset(writer)
            return
        logger.debug("connection %d opened", conn.id)
        pipes = [
            _Pipe(self, conn, "up", reader, up_writer, started),
            _Pipe(self, conn, "down", up_reader, writer, started),
        ]
        tasks = [asyncio.create_task(pipe.run()) for pipe in pipes]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t.exception() for t in done if t.exception() is not None]
            if failed:
                _reset(writer)
                _reset(up_writer)
                self._log_end(conn, failed[0])
            else:
                logger.debug("connection %d closed: %s", conn.id, _bytes(conn))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            up_writer.close()

    def _log_end(self, conn: ConnectionStats, error: BaseException | None) -> None:
        if isinstance(error, _ResetNow):
            conn.reset_by = error.side
            self.proxy.stats.resets += 1
            logger.info(
                "connection %d reset by its %s setting: %s", conn.id, error.side, _bytes(conn)
            )
        else:
            logger.info("connection %d broken (%r): %s", conn.id, error, _bytes(conn))

    async def close(self) -> None:
        """Stop every connection still open."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _bytes(conn: ConnectionStats) -> str:
    return f"{conn.bytes_up:,} B up, {conn.bytes_down:,} B down"


class _DelayLine:
    """Chunks in the order they were read, each held until ``delay`` after its reading."""

    def __init__(self, delay: float, limit_bytes: int = QUEUE_BYTES) -> None:
        self._delay = delay
        self._limit = limit_bytes
        self._items: deque[tuple[float, bytes]] = deque()
        self._queued = 0
        self._changed = asyncio.Condition()

    async def put(self, chunk: bytes) -> None:
        """Add a chunk read now (b"": the end), once the line has room."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._queued < self._limit)
            self._items.append((time.monotonic() + self._delay, chunk))
            self._queued += len(chunk)
            self._changed.notify_all()

    async def get(self) -> bytes:
        """The oldest chunk, once it is due."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            due, chunk = self._items.popleft()
            self._queued -= len(chunk)
            self._changed.notify_all()
        await _sleep_until(due)
        return chunk


class _TokenBucket:
    """Bytes at ``rate`` per second on average, at most a burst of ``BURST_SECONDS`` ahead."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(MIN_BURST_BYTES, int(rate * BURST_SECONDS))
        # Pieces of a quarter burst: a late wake-up keeps the tokens it earned meanwhile.
        self.piece = max(1, self.burst // 4)
        self._tokens = float(self.burst)
        self._at = time.monotonic()

    async def take(self, size: int) -> None:
        """Wait until ``size`` bytes may go."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= size
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


class _Pipe:
    """One direction of one connection: read, delay, shape, stall, write, maybe reset."""

    def __init__(
        self,
        server: _Server,
        conn: ConnectionStats,
        side: Side,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        started: float,
    ) -> None:
        impairment = server.impairment
        self.setting = impairment.up if side == "up" else impairment.down
        self.side = side
        self.conn = conn
        self.stats = server.proxy.stats
        self.rates = server.proxy.rates
        self.source = source
        self.sink = sink
        self.started = started
        self.bucket: _TokenBucket | None = None
        seed = impairment.seed
        rng = random.Random(f"{seed}:{conn.id}:{side}" if seed is not None else None)
        self.reset_at = self.setting.reset_byte(rng)
        self.sent = 0

    async def run(self) -> None:
        """Carry this direction until its source ends; raises ``_ResetNow`` on a reset."""
        if self.reset_at == 0:
            raise _ResetNow(self.side)
        line = _DelayLine(self.setting.delay_ms / 1000)
        reading = asyncio.create_task(self._read(line))
        try:
            while chunk := await line.get():
                await self._deliver(chunk)
            await reading  # the source's error, if it ended with one
            if self.sink.can_write_eof():
                self.sink.write_eof()
        finally:
            reading.cancel()

    async def _read(self, line: _DelayLine) -> None:
        try:
            while chunk := await self.source.read(CHUNK_BYTES):
                await line.put(chunk)
        finally:
            await line.put(b"")

    async def _deliver(self, chunk: bytes) -> None:
        start = 0
        while start < len(chunk):
            bucket = self._bucket()
            step = bucket.piece if bucket else len(chunk)
            piece = chunk[start : start + step]
            start += step
            if self.reset_at is not None:
                piece = piece[: self.reset_at - self.sent]
            if bucket:
                await bucket.take(len(piece))
            await self._wait_out_stall()
            self.sink.write(piece)
            self._count(len(piece))
            if self.sent == self.reset_at:
                await _flushed(self.sink)
                raise _ResetNow(self.side)
            await self.sink.drain()

    def _bucket(self) -> _TokenBucket | None:
        """The token bucket of the direction's rate now, renewed when the rate was changed."""
        rate = self.rates[self.side]
        if not rate:
            self.bucket = None
        elif self.bucket is None or self.bucket.rate != rate:
            self.bucket = _TokenBucket(rate)
        return self.bucket

    async def _wait_out_stall(self) -> None:
        every, length = self.setting.stall_every_seconds, self.setting.stall_seconds
        if not (every and length):
            return
        elapsed = time.monotonic() - self.started
        into = elapsed % every
        if elapsed >= every and into < length:
            await asyncio.sleep(length - into)

    def _count(self, size: int) -> None:
        self.sent += size
        if self.side == "up":
            self.conn.bytes_up += size
            self.stats.bytes_up += size
        else:
            self.conn.bytes_down += size
            self.stats.bytes_down += size


async def _sleep_until(moment: float) -> None:
    wait = moment - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


async def _flushed(writer: asyncio.StreamWriter) -> None:
    """Wait until the peer's TCP has acknowledged every byte written, so a reset loses none."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if writer.transport.get_write_buffer_size() == 0 and _unacknowledged(writer) == 0:
            return
        await asyncio.sleep(0.001)


def _unacknowledged(writer: asyncio.StreamWriter) -> int:
    """Bytes in the kernel's send queue not yet acknowledged by the peer (Linux TIOCOUTQ)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return 0
    count = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, count)
    except OSError:
        return 0
    return count[0]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: ``SO_LINGER`` 0 drops what is unsent and aborts the connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# The command.

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "kbit": 1000 / 8,
    "mbit": 1000**2 / 8,
    "gbit": 1000**3 / 8,
}


def parse_bytes(text: str) -> int:
    """``"2MB"`` -> 2000000: a count of bytes with an optional unit (k, MB, MiB, Mbit, ...)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500000, 64KiB, 2MB, 8Mbit)")
    return round(float(match.group(1)) * _UNITS[unit])


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9000"`` -> ``("127.0.0.1", 9000)``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def _add_direction(parser: argparse.ArgumentParser, side: Side, what: str) -> None:
    group = parser.add_argument_group(f"{side}: {what}")
    flag = f"--{side}"
    group.add_argument(
        f"{flag}-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="one-way delay added to every byte, in milliseconds",
    )
    group.add_argument(
        f"{flag}-rate",
        type=parse_bytes,
        default=0,
        metavar="BYTES/S",
        help="bandwidth limit in bytes per second; units k, MB, MiB, Mbit... (0: unlimited)",
    )
    group.add_argument(
        f"{flag}-stall-every",
        type=float,
        default=0.0,
        metavar="S",
        help="stall every S seconds since the connection opened (0: never)",
    )
    group.add_argument(
        f"{flag}-stall-for",
        type=float,
        default=0.0,
        metavar="S",
        help=f"how long each stall lasts, in seconds (shorter than {flag}-stall-every)",
    )
    group.add_argument(
        f"{flag}-reset-after",
        type=parse_bytes,
        default=None,
        metavar="BYTES",
        help="reset the connection (RST both ways) once this many bytes went this way",
    )
    group.add_argument(
        f"{flag}-reset-probability",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that each MiB going this way holds a reset, at a random byte",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.impair",
        description=(
            "A TCP proxy that impairs the network between a client and a service: one-way "
            "delay, bandwidth limit, periodic stalls and resets, for each direction on its own. "
            "Point the client at --listen; every connection is forwarded to --upstream."
        ),
        epilog=(
            "Example: a 75 ms, 2 MB/s path from a service to its viewers, stalling 1 s every "
            "10 s: --listen 127.0.0.1:9000 --upstream 127.0.0.1:8004 --down-delay-ms 75 "
            "--down-rate 2MB --down-stall-every 10 --down-stall-for 1"
        ),
    )
    parser.add_argument(
        "--listen",
        type=parse_address,
        required=True,
        metavar="HOST:PORT",
        help="where clients connect (port 0: any free port, logged)",
    )
    parser.add_argument(
        "--upstream",
        type=parse_address,
        required=True,
        metavar="HOST:PORT",
        help="the service every connection is forwarded to",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the random resets, so that a run can be replayed (default: random)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also log every connection's open and close"
    )
    _add_direction(parser, "up", "what the client sends to the service")
    _add_direction(parser, "down", "what the service sends back to the client")
    return parser


def _direction(args: argparse.Namespace, side: Side) -> Direction:
    return Direction(
        delay_ms=getattr(args, f"{side}_delay_ms"),
        rate_bytes_per_second=getattr(args, f"{side}_rate"),
        stall_every_seconds=getattr(args, f"{side}_stall_every"),
        stall_seconds=getattr(args, f"{side}_stall_for"),
        reset_after_bytes=getattr(args, f"{side}_reset_after"),
        reset_probability_per_mib=getattr(args, f"{side}_reset_probability"),
    )


async def _serve_until_stopped(
    impairment: Impairment, upstream: tuple[str, int], listen: tuple[str, int]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with impairment.serve(upstream, listen) as proxy:
        await stop.wait()
    stats = proxy.stats
    logger.info(
        "stopped: %d connections, %s B up, %s B down, %d resets",
        stats.connections,
        f"{stats.bytes_up:,}",
        f"{stats.bytes_down:,}",
        stats.resets,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGINT or SIGTERM."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        impairment = Impairment(_direction(args, "up"), _direction(args, "down"), args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    with asyncio.Runner(loop_factory=new_event_loop) as run:
        run.run(_serve_until_stopped(impairment, args.upstream, args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
