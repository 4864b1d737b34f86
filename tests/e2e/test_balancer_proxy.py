"""The balancer as a proxy over real backends: Range, HEAD, errors, retries and streaming.

Must show 4 lives here: Range requests through the balancer return the same bytes as direct.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import websockets.sync.client

from shared.runtime.resources import Resources
from tests.support.balancer import start_balancer, start_cluster
from tests.support.polling import eventually, wait_for
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.signing import signed_path
from tests.support.storage import put_random

RANGES = [
    "bytes=0-0",
    "bytes=100-199",
    "bytes=1000-",
    "bytes=-500",
    "bytes=0-262143",
    "bytes=5000-999999999",
]


async def stats_after(client: httpx.AsyncClient, lb: str, moment: float) -> dict[str, Any]:
    """The first stats snapshot taken after ``moment`` (``time.time()``).

    Stats are a snapshot per scrape tick, taken once the tick's scrapes are in, so how soon one
    follows a request depends on how busy the machine is.
    """

    async def check() -> dict[str, Any] | None:
        stats: dict[str, Any] = (await client.get(f"{lb}/api/stats")).json()
        return stats if stats["time"] > moment else None

    return await eventually(check, within=30, what="a stats snapshot after the requests")


@pytest.fixture(scope="module")
def cluster(
    test_env: dict[str, str], test_root: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    procs = Processes(tmp_path_factory.mktemp("balancer-proxy-logs"), test_env)
    try:
        started = start_cluster(procs, 2, {"lb": {"scrape_interval_seconds": 0.5}})
        yield {**started.backends, "lb": started.balancers["lb"]}
    finally:
        procs.stop_all()


async def test_range_requests_return_the_same_bytes_as_direct(
    cluster: dict[str, str], res: Resources
) -> None:
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00002.m4s"
    body = await put_random(res.need_store(), key, 256 * 1024)
    path = signed_path(key)
    async with httpx.AsyncClient(timeout=20) as client:
        for header in RANGES:
            direct = await client.get(cluster["b0"] + path, headers={"Range": header})
            proxied = await client.get(cluster["lb"] + path, headers={"Range": header})
            assert direct.status_code == 206, (header, direct.text)
            assert proxied.status_code == direct.status_code, header
            assert proxied.content == direct.content, header
            assert proxied.headers["content-range"] == direct.headers["content-range"]
            assert proxied.headers["content-length"] == direct.headers["content-length"]
            assert proxied.headers["etag"] == direct.headers["etag"]
            assert proxied.headers["x-backend"] in ("b0", "b1")
        whole = await client.get(cluster["lb"] + path)
        assert whole.status_code == 200 and whole.content == body
        for header in ("bytes=999999-", "bytes=oops"):
            direct = await client.get(cluster["b0"] + path, headers={"Range": header})
            proxied = await client.get(cluster["lb"] + path, headers={"Range": header})
            assert (proxied.status_code, proxied.content) == (direct.status_code, direct.content)
        head = await client.head(cluster["lb"] + path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(body))
        etag = whole.headers["etag"]
        cached = await client.get(cluster["lb"] + path, headers={"If-None-Match": etag})
        assert cached.status_code == 304


async def test_client_errors_pass_through_and_unknown_methods_are_refused(
    cluster: dict[str, str],
) -> None:
    async with httpx.AsyncClient(base_url=cluster["lb"], timeout=20) as client:
        forbidden = await client.get("/origin/videos/x/hls/master.m3u8?exp=1&sig=00")
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
        posted = await client.post("/origin/videos/x/hls/master.m3u8")
        assert posted.status_code == 405
        assert posted.json()["error"] == "method_not_allowed"
        deadline = time.monotonic() + 30
        while True:
            stats = (await client.get("/api/stats")).json()
            if all(b["state"] == "healthy" and b["memory_bytes"] > 0 for b in stats["backends"]):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"backends not scraped and healthy: {stats}")
            await asyncio.sleep(0.2)
        assert stats["strategy"] == "tiered"
        assert {b["name"] for b in stats["backends"]} == {"b0", "b1"}
        exposition = (await client.get("/metrics")).text
        assert 'balancer_backend_score{backend="b0"}' in exposition
        assert "balancer_upstream_requests_total{backend=" in exposition


def test_websocket_sends_history_then_a_snapshot_each_second(cluster: dict[str, str]) -> None:
    url = cluster["lb"].replace("http://", "ws://") + "/ws"
    with websockets.sync.client.connect(url, open_timeout=10) as socket:
        first = json.loads(socket.recv(timeout=10))
        assert first["type"] == "history"
        started = time.monotonic()
        times = []
        for _ in range(2):
            message = json.loads(socket.recv(timeout=5))
            assert message["type"] == "snapshot"
            assert {b["name"] for b in message["snapshot"]["backends"]} == {"b0", "b1"}
            times.append(message["snapshot"]["time"])
        assert time.monotonic() - started < 4
        assert times[1] > times[0]


class _Failing(BaseHTTPRequestHandler):
    """A real HTTP backend that is up but answers every request with 503."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        payload = b'{"error": "overloaded"}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class _Backend(BaseHTTPRequestHandler):
    """A keep-alive HTTP/1.1 backend that keeps quiet and answers the balancer's scrapes."""

    protocol_version = "HTTP/1.1"

    def answered_scrape(self) -> bool:
        """An empty 200 for ``/metrics``; whether the request was that scrape."""
        if self.path != "/metrics":
            return False
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def log_message(self, *args: object) -> None:
        pass


class _Trickle(_Backend):
    """A backend that sends the first half of its body, pauses, then sends the rest."""

    # Long enough that the first half cannot be mistaken for one sent after the pause, even
    # when a busy machine delays it.
    pause_seconds = 3.0

    def do_GET(self) -> None:
        if self.answered_scrape():
            return
        self.send_response(200)
        self.send_header("Content-Length", str(2 * 65536))
        self.end_headers()
        self.wfile.write(b"a" * 65536)
        self.wfile.flush()
        time.sleep(self.pause_seconds)
        self.wfile.write(b"b" * 65536)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


async def test_5xx_and_dead_backends_are_retried_elsewhere(
    cluster: dict[str, str], procs: Processes, res: Resources
) -> None:
    failing, failing_url = serve(_Failing)
    dead_url = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    backends = {"failing": failing_url, "dead": dead_url, "good": cluster["b0"]}
    # Ejection is kept out of the way so that every request meets the bad backends again.
    start_balancer(procs, backends, eject_after_failures=1000, port=port)
    lb = f"http://127.0.0.1:{port}"
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00003.m4s"
    body = await put_random(res.need_store(), key, 32 * 1024)
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            for _ in range(30):
                response = await client.get(lb + signed_path(key))
                assert response.status_code == 200 and response.content == body
                assert response.headers["x-backend"] == "good"
            stats = await stats_after(client, lb, time.time())
    finally:
        failing.shutdown()
    assert _Failing.hits > 0
    assert stats["totals"]["retries_total"] > 10
    rows = {b["name"]: b for b in stats["backends"]}
    assert rows["dead"]["failures_total"] > 0 and rows["failing"]["failures_total"] > 0


async def test_every_backend_down_is_a_clear_502(procs: Processes) -> None:
    port = free_port()
    backends = {f"gone{i}": f"http://127.0.0.1:{free_port()}" for i in range(2)}
    start_balancer(procs, backends, port=port)
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.get(f"http://127.0.0.1:{port}/origin/videos/x/seg.m4s")
    assert response.status_code == 502
    problem = response.json()
    assert problem["error"] == "upstream_unavailable"
    assert "no backend could serve the request" in problem["detail"]
    assert sorted(problem["tried"]) == ["gone0", "gone1"]


def test_bodies_stream_through_without_buffering(procs: Processes) -> None:
    trickle, trickle_url = serve(_Trickle)
    port = free_port()
    start_balancer(procs, {"trickle": trickle_url}, port=port)
    try:
        with httpx.stream("GET", f"http://127.0.0.1:{port}/slow.bin", timeout=20) as response:
            started = time.monotonic()
            chunks = response.iter_raw()
            first = next(chunks)
            first_after = time.monotonic() - started
            rest = b"".join(chunks)
            total_after = time.monotonic() - started
    finally:
        trickle.shutdown()
    assert first.startswith(b"a")
    assert len(first) + len(rest) == 2 * 65536
    assert first_after < _Trickle.pause_seconds / 2, "the first half arrived before the pause"
    assert total_after >= _Trickle.pause_seconds * 0.9


class _Chunked(_Backend):
    """A backend answering with a chunked body of three parts."""

    parts = (b"x" * 1000, b"y" * 70000, b"z")

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in self.parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")


def _read_response(sock: socket.socket, buffered: bytearray) -> tuple[bytes, bytes]:
    """One Content-Length-framed response off a raw socket: (head, body)."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {bytes(buffered)!r}"
        buffered += chunk
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    buffered[:] = body[length:]
    return head, bytes(body[:length])


async def test_pipelined_requests_are_answered_in_order(
    cluster: dict[str, str], res: Resources
) -> None:
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00004.m4s"
    body = await put_random(res.need_store(), key, 100_000)
    host, port = cluster["lb"].removeprefix("http://").split(":")
    segment = f"GET {signed_path(key)} HTTP/1.1\r\nHost: lb\r\n\r\n".encode()
    health = b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(segment + health + segment + b"HEAD /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")
        buffered = bytearray()
        first = _read_response(sock, buffered)
        second = _read_response(sock, buffered)
        third = _read_response(sock, buffered)
    assert first[0].startswith(b"HTTP/1.1 200") and first[1] == body
    assert second[0].startswith(b"HTTP/1.1 200") and json.loads(second[1])["status"] == "ok"
    assert third[1] == body


def test_malformed_requests_get_a_clear_400(cluster: dict[str, str]) -> None:
    host, port = cluster["lb"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost lb\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    problem = json.loads(body)
    assert problem["error"] == "bad_request" and "malformed" in problem["detail"]


def test_chunked_backend_answers_are_relayed_whole(procs: Processes) -> None:
    chunked, chunked_url = serve(_Chunked)
    port = free_port()
    start_balancer(procs, {"chunked": chunked_url}, port=port)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/any.bin", timeout=20)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # An HTTP/1.0 viewer cannot take chunks: the body ends with the connection instead.
            sock.sendall(b"GET /any.bin HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        chunked.shutdown()
    whole = b"".join(_Chunked.parts)
    assert response.status_code == 200 and response.content == whole
    assert response.headers["transfer-encoding"] == "chunked"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert body == whole


class _Firehose(_Backend):
    """A backend writing a large body as fast as the connection takes it, counting what left."""

    size = 256 * 1024 * 1024
    written = 0

    def do_GET(self) -> None:
        if self.answered_scrape():
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        block = b"f" * 65536
        try:
            for _ in range(self.size // len(block)):
                self.wfile.write(block)
                type(self).written += len(block)
        except OSError:
            pass


def test_a_slow_viewer_holds_back_the_backend_instead_of_filling_memory(
    procs: Processes,
) -> None:
    firehose, firehose_url = serve(_Firehose)
    port = free_port()
    start_balancer(procs, {"firehose": firehose_url}, port=port)

    def stalled() -> int | None:
        """What the backend had sent, once it sent nothing more for a whole second."""
        before = _Firehose.written
        time.sleep(1)
        return before if _Firehose.written == before else None

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: lb\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            # The viewer stops reading: what the backend manages to send is bounded by the
            # socket buffers on the way, not by the size of the body (a balancer buffering
            # the body would run on towards the whole 256 MiB instead of stalling).
            stalled_at = wait_for(stalled, timeout=60, interval=0, what="the backend to stall")
            assert stalled_at < 32 * 1024 * 1024, stalled_at
            # Reading again lets the backend go on.
            deadline = time.monotonic() + 30
            received = 0
            while _Firehose.written == stalled_at or received < 4 * 1024 * 1024:
                assert time.monotonic() < deadline, "reading again did not let the backend go on"
                chunk = sock.recv(1024 * 1024)
                assert chunk
                received += len(chunk)
    finally:
        firehose.shutdown()


class _Stuck(_Backend):
    """A backend that takes viewer requests and never answers them."""

    def do_GET(self) -> None:
        if self.answered_scrape():
            return
        time.sleep(20)


async def test_a_backend_that_never_answers_times_out_and_is_retried(
    cluster: dict[str, str], procs: Processes, res: Resources
) -> None:
    stuck, stuck_url = serve(_Stuck)
    port = free_port()
    backends = {"stuck": stuck_url, "good": cluster["b0"]}
    knobs = {"strategy": "round_robin", "read_timeout_seconds": 1, "eject_after_failures": 1000}
    start_balancer(procs, backends, port=port, **knobs)
    lb = f"http://127.0.0.1:{port}"
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00005.m4s"
    body = await put_random(res.need_store(), key, 16 * 1024)
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            started = time.monotonic()
            answers = [await client.get(lb + signed_path(key)) for _ in range(2)]
            took = time.monotonic() - started
            stats = await stats_after(client, lb, time.time())
    finally:
        stuck.shutdown()
    assert all(a.status_code == 200 and a.content == body for a in answers)
    assert all(a.headers["x-backend"] == "good" for a in answers)
    # One of the two met the stuck backend first and waited out the timeout (1 s, checked
    # once a second) before its retry: well before the 20 s the stuck backend holds a request,
    # with room for a busy machine.
    assert 1 <= took < 10, took
    rows = {b["name"]: b for b in stats["backends"]}
    assert rows["stuck"]["failures_total"] >= 1
    assert stats["totals"]["retries_total"] >= 1


def _raw_answer(port: int, data: bytes) -> tuple[bytes, float]:
    """What the server answers ``data`` with before closing, and how long that took."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def test_the_viewers_listener_takes_its_limits_from_the_settings(procs: Processes) -> None:
    port = free_port()
    gone = {"gone": f"http://127.0.0.1:{free_port()}"}
    start_balancer(procs, gone, port=port, max_request_line_bytes=300, header_timeout_seconds=1)
    long_target, _ = _raw_answer(port, b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: lb\r\n\r\n")
    assert long_target.startswith(b"HTTP/1.1 414 ")
    assert json.loads(long_target.partition(b"\r\n\r\n")[2])["error"] == "uri_too_long"
    slow_head, took = _raw_answer(port, b"GET /x HTTP/1.1\r\nHost: lb\r\nX-Half: ")
    assert slow_head.startswith(b"HTTP/1.1 408 ") and 1 <= took < 5, took
