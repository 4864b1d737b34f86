"""The hand-written HTTP/1.1 fronts (balancer, redirector) against hostile clients, end to end.

The kit (``shared.http.h1``) bounds every request before it does any work for it: an overlong
request line (414), too many or too big headers (431), an oversized body (413) and a head sent
too slowly (408) are refused with the platform's JSON error, cheaply, and nothing of such a
request reaches what is behind the front: the balancer's backend (here a small HTTP server that
logs every request head it reads) or the redirector's app. A slow client holds nothing that a
normal request needs. A body the balancer drops is not announced to its backend. And a viewer's
bad request that an edge refuses (403) is the viewer's fault, not the edge's: the balancer keeps
the edge in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.balancer import backend_row, start_balancer
from tests.support.metrics import metric
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.redirector import start_redirectors
from tests.support.security import BUDGET_SECONDS, assert_cheap, cheap, refused

MIB = 1024 * 1024
# Short, so that slow clients are cut off within the test; the other limits are the defaults.
HEADER_TIMEOUT_SECONDS = 2.0
SEND_TIMEOUT_SECONDS = 2.0
# The balancer's connections to its backend, few enough for a test to take them all.
BACKEND_CONNECTIONS = 4
# The size of the recorder's /big answer.
BIG = 64 * MIB
DEFAULT_HEADERS = 100
DEFAULT_BODY_BYTES = MIB
VIDEO = "http://s1.origin-cluster/video/1/clip.m3u8"
# A backend that logs, as a JSON line, the head of every request it reads but the balancer's own
# scrapes and health checks, and every request it cannot read. Like many servers it reads the
# body a request announces, wanted or not, to keep the connection for the next request.
RECORDER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


BIG = 64 * 1024 * 1024
CHUNK = 64 * 1024


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        routine = self.path in ("/metrics", "/healthz")
        if not routine:
            print(json.dumps({"line": self.requestline, "headers": self.headers.items()}))
        if self.path == "/big":
            self.send_response(200)
            self.send_header("content-length", str(BIG))
            self.end_headers()
            try:
                for _ in range(BIG // CHUNK):
                    self.wfile.write(b"x" * CHUNK)
            except OSError:
                self.close_connection = True
            return
        body = b"" if routine else b'{"error": "not_found", "detail": "recorded"}'
        self.send_response(200 if routine else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass

    def log_error(self, format, *args):
        print(json.dumps({"error": format % args}))


sys.stdout.reconfigure(line_buffering=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Recorder).serve_forever()
"""


@dataclass
class Front:
    """A running front: where it listens, a normal request, and how to tell that nothing of a
    hostile request reached what is behind it."""

    name: str
    url: str
    normal_path: str
    # How many requests what is behind the front has seen beyond its routine traffic.
    behind: Callable[[], int]
    # Kept alive between normal requests (a client per request would time its own setup).
    client: httpx.Client

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def normal(self) -> httpx.Response:
        response = self.client.get(self.url + self.normal_path)
        assert response.status_code in (200, 302), response.text
        return response


@dataclass
class Fleet:
    balancer: Front
    redirector: Front
    # What the balancer's backend was sent.
    recorder_log: Path
    # A balancer over an edge.
    edge_balancer: Proc


def _recorder(procs: Processes) -> tuple[Proc, Path]:
    """The balancer's backend: ``RECORDER`` on a free port; its log is what it was sent."""
    port = free_port()
    proc = procs.start(
        "recorder",
        [sys.executable, "-c", RECORDER, str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        wait=False,
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc, proc.log_path


def recorded(log: Path) -> list[dict[str, Any]]:
    """What the recorder logged: a request line and headers, or an error of its own, each."""
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _unmatched(url: str) -> Callable[[], int]:
    """Requests the redirector's app answered as matching no route (where a hostile request
    would have gone)."""

    def count() -> int:
        return int(metric(url, "http_requests_total", route="unmatched"))

    return count


def _passed_on(log: Path) -> Callable[[], int]:
    def count() -> int:
        return len(recorded(log))

    return count


@pytest.fixture(scope="module")
def fleet(test_env: dict[str, str], test_root: Path) -> Iterator[Fleet]:
    root = test_root / "fronts"
    procs = Processes(root / "logs", test_env)
    timeout = str(HEADER_TIMEOUT_SECONDS)
    client = httpx.Client(timeout=10)
    try:
        recorder, recorder_log = _recorder(procs)
        origin = procs.service("origin", wait=False)
        edge = procs.service(
            "edge",
            env={"EDGE_ORIGIN_URL": origin.url, "EDGE_CACHE_DIR": str(root / "edge-cache")},
            wait=False,
        )
        balancer = start_balancer(
            procs,
            {"recorder": recorder.url},
            wait=False,
            header_timeout_seconds=timeout,
            send_timeout_seconds=SEND_TIMEOUT_SECONDS,
            max_connections=BACKEND_CONNECTIONS,
        )
        edge_balancer = start_balancer(procs, {"edge": edge.url}, wait=False)
        procs.wait_ready([recorder, origin, edge, balancer, edge_balancer], timeout=90)
        (redirector,) = start_redirectors(
            procs,
            1,
            {
                "REDIRECTOR_HEADER_TIMEOUT_SECONDS": timeout,
                "REDIRECTOR_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT_SECONDS),
            },
        )

        yield Fleet(
            Front("balancer", balancer.url, "/healthz", _passed_on(recorder_log), client),
            Front(
                "redirector",
                redirector.url,
                f"/?video={VIDEO}",
                _unmatched(redirector.url),
                client,
            ),
            recorder_log,
            edge_balancer,
        )
    finally:
        client.close()
        procs.stop_all()


@pytest.fixture(scope="module")
def hostile_client() -> Iterator[httpx.Client]:
    """The hostile requests' client, apart from the normal requests' one."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(params=["balancer", "redirector"])
def front(fleet: Fleet, request: pytest.FixtureRequest) -> Front:
    chosen: Front = getattr(fleet, request.param)
    return chosen


def raw(port: int, data: bytes, *, timeout: float = 10) -> httpx.Response:
    """Send ``data`` as it is on a new connection; the first answer (its body by its length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            # Refused before it was all sent: the answer is already on its way.
            pass
        received = b""
        while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
            received += chunk
        response = parse_answer(received)
        length = int(response.headers.get("content-length", 0))
        while len(received.partition(b"\r\n\r\n")[2]) < length and (chunk := sock.recv(65536)):
            received += chunk
    return parse_answer(received)


def parse_answer(received: bytes) -> httpx.Response:
    """The answer at the start of ``received``, as an httpx response."""
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    length = int(dict((k.lower(), v) for k, v in headers).get("content-length", len(body)))
    return httpx.Response(int(status_line.split(" ")[1]), headers=headers, content=body[:length])


def marker() -> str:
    """A path no normal request uses, to look for in what the backend saw."""
    return f"/hostile-{uuid.uuid4().hex}"


def assert_not_passed_on(front: Front, before: int) -> None:
    # The backend may still be writing its log line of a request that did reach it.
    time.sleep(0.2)
    assert front.behind() == before, f"{front.name} passed on a refused request"


def test_a_2mb_request_line_is_414_and_is_not_passed_on(front: Front) -> None:
    mark = marker()
    target = (mark + "?q=" + "a" * (2 * MIB)).encode()
    before = front.behind()

    def hostile() -> httpx.Response:
        return raw(front.port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)

    cost, response = cheap(hostile, front.normal)
    refused(response, 414, error="uri_too_long", mentions="request target")
    assert response.headers["connection"] == "close"
    assert_cheap(cost)
    assert_not_passed_on(front, before)


def test_too_many_headers_are_431_and_are_not_passed_on(
    front: Front, hostile_client: httpx.Client
) -> None:
    mark = marker()
    before = front.behind()
    many = {f"x-h{n}": "v" for n in range(200)}

    def hostile() -> httpx.Response:
        return hostile_client.get(front.url + mark, headers=many)

    cost, response = cheap(hostile, front.normal)
    refused(response, 431, error="headers_too_large", mentions=f"more than {DEFAULT_HEADERS}")
    assert_cheap(cost)
    assert_not_passed_on(front, before)


def test_a_1mb_header_is_431_and_is_not_passed_on(
    front: Front, hostile_client: httpx.Client
) -> None:
    mark = marker()
    before = front.behind()

    def hostile() -> httpx.Response:
        return hostile_client.get(front.url + mark, headers={"x-big": "a" * MIB})

    cost, response = cheap(hostile, front.normal)
    refused(response, 431, error="headers_too_large", mentions="exceed")
    assert_cheap(cost)
    assert_not_passed_on(front, before)


def test_an_oversized_body_is_413_and_is_not_passed_on(
    front: Front, hostile_client: httpx.Client
) -> None:
    mark = marker()
    before = front.behind()
    body = b"{" * (2 * DEFAULT_BODY_BYTES)

    def hostile() -> httpx.Response:
        return hostile_client.post(front.url + mark, content=body)

    cost, response = cheap(hostile, front.normal)
    refused(response, 413, error="payload_too_large", mentions=str(DEFAULT_BODY_BYTES))
    assert_cheap(cost)
    assert_not_passed_on(front, before)


def test_a_declared_oversized_body_is_413_before_it_is_sent(front: Front) -> None:
    """Bounds before work: a Content-Length over the limit is refused at the end of the head,
    without waiting for (or reading) a byte of the body."""
    mark = marker()
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (
        mark.encode(),
        100 * DEFAULT_BODY_BYTES,
    )
    before = front.behind()
    cost, response = cheap(lambda: raw(front.port, head), front.normal)
    refused(response, 413, error="payload_too_large", mentions=str(DEFAULT_BODY_BYTES))
    assert_cheap(cost)
    assert_not_passed_on(front, before)


def test_the_recorder_sees_what_is_passed_on(fleet: Fleet, hostile_client: httpx.Client) -> None:
    """The check above is not blind: a request within the limits does reach the backend."""
    front = fleet.balancer
    before = front.behind()
    response = hostile_client.get(front.url + marker())
    assert response.status_code == 404 and response.headers["x-backend"] == "recorder"
    time.sleep(0.2)
    assert front.behind() == before + 1


def test_a_body_the_balancer_does_not_forward_is_not_announced_either(
    fleet: Fleet, hostile_client: httpx.Client
) -> None:
    """A GET's body is read by the front and dropped: forwarding its Content-Length would have
    the backend take the start of the next request on that connection for the body."""
    front = fleet.balancer
    mark = marker()
    head = b"GET %s HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n" % mark.encode()
    response = raw(front.port, head + b"GET /smuggled HT")
    assert response.status_code == 404 and response.headers["x-backend"] == "recorder"
    later = [marker() for _ in range(3)]
    for path in later:
        # Over the connection the balancer keeps to the backend.
        response = hostile_client.get(front.url + path)
        assert response.status_code == 404 and response.headers["x-backend"] == "recorder"
    time.sleep(0.2)
    lines = [r.get("line", "") for r in recorded(fleet.recorder_log)]
    assert [line for line in lines if mark in line or any(p in line for p in later)] == [
        f"GET {path} HTTP/1.1" for path in [mark, *later]
    ], lines[-6:]
    (first,) = (r for r in recorded(fleet.recorder_log) if mark in r.get("line", ""))
    assert "content-length" not in {name for name, _ in first["headers"]}, first


async def _slowloris(port: int, mark: str) -> tuple[bytes, float]:
    """A head sent one byte a second; what the server answered, and when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\nX-Slow: " % mark.encode())

    async def trickle() -> None:
        while True:
            await asyncio.sleep(1)
            writer.write(b"a")
            await writer.drain()

    dripping = asyncio.create_task(trickle())
    try:
        received = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_SECONDS + 5)
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()
    return received, time.monotonic() - started


async def _normal_seconds(client: httpx.AsyncClient, url: str, rounds: int = 7) -> float:
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = await client.get(url)
        took.append(time.perf_counter() - started)
        assert response.status_code in (200, 302), response.text
        await asyncio.sleep(0.05)
    return statistics.median(took)


async def test_a_slowloris_head_is_408_within_the_deadline_and_holds_no_slot(
    front: Front,
) -> None:
    """Fifty connections trickling a head a byte a second: each is answered 408 and closed at
    the deadline, counted from its first byte, and normal requests meanwhile take no longer."""
    mark = marker()
    before = front.behind()
    async with httpx.AsyncClient(timeout=10) as client:
        alone = await _normal_seconds(client, front.url + front.normal_path)
        slow = [asyncio.create_task(_slowloris(front.port, mark)) for _ in range(50)]
        await asyncio.sleep(0.5)
        beside = await _normal_seconds(client, front.url + front.normal_path)
        answers = await asyncio.gather(*slow)
        after = await _normal_seconds(client, front.url + front.normal_path)
    assert beside - alone < BUDGET_SECONDS, (alone, beside)
    assert after - alone < BUDGET_SECONDS, (alone, after)
    for received, took in answers:
        response = parse_answer(received)
        refused(response, 408, error="request_timeout")
        # The deadline counts from the first byte; the sweep ticks up to twice past it.
        assert HEADER_TIMEOUT_SECONDS <= took < HEADER_TIMEOUT_SECONDS + 1.5, took
    assert_not_passed_on(front, before)


def _reads_nothing(port: int, request: bytes, count: int = 1) -> socket.socket:
    """A connection that sends ``request`` ``count`` times (pipelined, as far as the server
    reads them) and takes almost nothing of the answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connecting, so that the window offered to the server stays small.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    data = memoryview(request * count)
    sent = 0
    # The server stops reading once its answers back up; then the flood stops too. A busy
    # machine answers slower, so the flood waits for that stall, not for a fixed time.
    deadline = time.monotonic() + 30
    progress = time.monotonic()
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(data[sent:])
            progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - progress > 1.0:
                break
            time.sleep(0.01)
        except (ConnectionResetError, BrokenPipeError):
            # Cut off already, mid-flood: what the caller reads next says so.
            return sock
    # The last request whole, or the server would wait for the rest of it (and time it out).
    sock.setblocking(True)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        sock.sendall(data[sent : sent + (-sent) % len(request)])
    return sock


def _cut_off(sock: socket.socket, after: float) -> tuple[bool, int]:
    """Read nothing for ``after`` s, then all there is: whether the server had ended the
    connection by then, and how much of the answers still arrived."""
    time.sleep(after)
    sock.setblocking(True)
    # Reading lets a server that is still there go on writing: silence means it is.
    sock.settimeout(1)
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        return True, received
    except TimeoutError:
        return False, received
    finally:
        sock.close()
    return True, received


def _flood(front: Front) -> tuple[bytes, int]:
    """Requests whose answers fill the buffers between the front and a client not reading."""
    if front.name == "balancer":
        return b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n", 1
    # Answers of over 100 bytes each: far more than the socket buffers between the two hold.
    return b"GET /?video=%s HTTP/1.1\r\nHost: t\r\n\r\n" % VIDEO.encode(), 200_000


def test_a_client_that_reads_nothing_is_cut_off_at_the_send_deadline(front: Front) -> None:
    """A slow reader: the front stops reading from it once its answers back up, and drops the
    connection (and what is buffered for it) when nothing was taken for the send deadline."""
    request, count = _flood(front)
    alone = statistics.median(_timed(front.normal) for _ in range(5))
    sock = _reads_nothing(front.port, request, count)
    beside = statistics.median(_timed(front.normal) for _ in range(5))
    ended, received = _cut_off(sock, SEND_TIMEOUT_SECONDS + 2)
    assert ended, "the connection outlived the send deadline"
    # Cut off before all answers went out (a redirect's answer is over 100 bytes).
    assert received < (BIG if front.name == "balancer" else count * 100), received
    assert beside - alone < BUDGET_SECONDS, (alone, beside)


def test_viewers_that_read_nothing_free_their_backend_connections(
    fleet: Fleet, hostile_client: httpx.Client
) -> None:
    """Each stalled viewer holds a backend connection while its answer is under way; at the
    send deadline it is cut off and the connection freed, so other viewers are served."""
    front = fleet.balancer
    stalled = [
        _reads_nothing(front.port, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(BACKEND_CONNECTIONS)
    ]
    time.sleep(0.5)
    started = time.monotonic()
    response = hostile_client.get(front.url + marker())
    waited = time.monotonic() - started
    assert response.status_code == 404 and response.headers["x-backend"] == "recorder"
    assert waited < SEND_TIMEOUT_SECONDS + 2, waited
    for sock in stalled:
        ended, received = _cut_off(sock, 0.5)
        assert ended and received < BIG, received


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_a_refused_signature_is_not_a_backend_failure(
    fleet: Fleet, hostile_client: httpx.Client
) -> None:
    """Signatures with non-ASCII characters: the edge answers 403, and a 4xx is the viewer's
    fault, so the balancer neither retries it elsewhere nor counts it against the edge (which
    would be ejected after ``BALANCER_EJECT_AFTER_FAILURES`` of them in a row)."""
    url = fleet.edge_balancer.url
    port = int(url.rsplit(":", 1)[1])
    key = f"videos/{uuid.uuid4()}/hls/master.m3u8"
    exp = int(time.time()) + 600
    failures = metric(url, "balancer_backend_failures_total", backend="edge")
    ok = metric(url, "balancer_upstream_requests_total", backend="edge", outcome="ok")
    signatures = ["é" * 64, "\u202e" * 8 + "a" * 56, "ü", "%FF" * 32, "0" * 63 + "ß"]
    for signature in signatures:
        # As a browser sends it: percent-encoded UTF-8. The edge refuses it.
        response = hostile_client.get(f"{url}/origin/{key}", params={"exp": exp, "sig": signature})
        refused(response, 403, error="forbidden")
        assert response.headers["x-backend"] == "edge"
        # Raw UTF-8 bytes in the request line are not HTTP: the balancer refuses them itself.
        target = f"/origin/{key}?exp={exp}&sig={signature}".encode()
        response = raw(port, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)
        if signature.isascii():
            refused(response, 403, error="forbidden")
        else:
            refused(response, 400, error="bad_request", mentions="malformed")
            assert "x-backend" not in response.headers
    # Raw non-ASCII bytes in a header value are allowed (obs-text) and go on to the edge.
    response = raw(
        port,
        b"GET /origin/%s?exp=%d&sig=%s HTTP/1.1\r\nHost: t\r\nX-Viewer-Id: \xc3\xa9\xff\r\n"
        b'If-None-Match: "\xe9"\r\nRange: bytes=\xff-\r\n\r\n' % (key.encode(), exp, b"a" * 64),
    )
    refused(response, 403, error="forbidden")
    assert response.headers["x-backend"] == "edge"
    sent = len(signatures) + sum(1 for s in signatures if s.isascii()) + 1
    assert metric(url, "balancer_backend_failures_total", backend="edge") == failures
    after = metric(url, "balancer_upstream_requests_total", backend="edge", outcome="ok")
    assert after - ok == sent
    row = backend_row(url, "edge")
    assert row["state"] == "healthy" and row["consecutive_failures"] == 0, row
    assert row["ejections_total"] == 0, row
