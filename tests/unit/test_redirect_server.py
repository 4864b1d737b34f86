"""The redirector's HTTP/1.1 server (its front on the h1 kit) in this process, on real sockets."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.redirector.app import build
from services.redirector.decision import viewer_bucket
from services.redirector.front import Running, start
from services.redirector.settings import DEV_ADMIN_TOKEN, Settings
from shared.http.h1_limits import Limits
from tests.support.ports import free_port

VIDEO = "http://s1.origin-cluster/video/1.m3u8"
UNREACHABLE_DB = "postgresql+asyncpg://postgres@127.0.0.1:1/unused"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redirector_cdn_host": "cdn.test",
        "redirector_ratio": 2,
        "redirector_instance_id": "unit-1",
        "database_url": UNREACHABLE_DB,
        **overrides,
    }
    return Settings(**values)


async def start_redirector(**overrides: Any) -> Running:
    """The server as ``vsp serve redirector`` runs it, with these settings."""
    config = settings(**overrides)
    app = build(config)
    redirector = app.state.redirector if config.redirector_fast_path else None
    return await start(
        app, redirector, host="127.0.0.1", port=free_port(), limits=config.http_limits
    )


@pytest.fixture
async def server() -> AsyncIterator[Running]:
    running = await start_redirector()
    try:
        yield running
    finally:
        await running.close()


async def exchange(port: int, data: bytes, wait: float = 1.0) -> bytes:
    """Send raw bytes, read until the server closes or ``wait`` seconds of silence."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), wait):
            received += chunk
    except TimeoutError:
        pass
    writer.close()
    return received


def statuses(raw: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_redirects_count_over_one_keep_alive_connection(server: Running) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        answers = [await client.get("/", params={"video": VIDEO}) for _ in range(4)]
    assert [r.status_code for r in answers] == [302] * 4
    assert [r.headers["location"] for r in answers] == [
        VIDEO,
        "http://cdn.test/s1/video/1.m3u8",
    ] * 2
    assert all(r.headers["cache-control"] == "no-store" for r in answers)
    assert all(r.headers["content-length"] == "0" and "date" in r.headers for r in answers)


async def test_bad_video_urls_get_json_errors(server: Running) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        evil = await client.get("/", params={"video": "https://evil.example/x"})
        garbage = await client.get("/", params={"video": "garbage"})
        head = await client.head("/", params={"video": "garbage"})
    assert (evil.status_code, evil.json()["error"]) == (400, "host_not_allowed")
    assert (garbage.status_code, garbage.json()["error"]) == (400, "invalid_video_url")
    assert head.status_code == 400 and head.content == b""
    assert head.headers["content-length"] == garbage.headers["content-length"]


async def test_everything_else_goes_to_the_framework(server: Running) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        config = await client.get("/")
        whoami = await client.get("/whoami")
        unauthorized = await client.post("/config", json={"ratio": 3})
        admin = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
        invalid = await client.post("/config", json={"ratio": 0}, headers=admin)
        no_database = await client.post("/config", json={"ratio": 3}, headers=admin)
        missing = await client.get("/nowhere")
        metrics = await client.get("/metrics")
    assert (config.json()["ratio"], config.json()["cdn_host"]) == (2, "cdn.test")
    assert whoami.json() == {"instance": "unit-1"}
    assert unauthorized.status_code == 401 and unauthorized.json()["error"] == "unauthorized"
    assert (invalid.status_code, invalid.json()["error"]) == (422, "validation_error")
    assert (no_database.status_code, no_database.json()["error"]) == (502, "upstream_unavailable")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "redirector_redirects_total" in metrics.text


async def test_pipelined_answers_keep_request_order(server: Running) -> None:
    raw = await exchange(
        server.port,
        b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /?video=http://s2.origin-cluster/a HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /?video=http://s3.origin-cluster/b HTTP/1.0\r\n\r\n"
        b"GET /whoami HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    # The HTTP/1.0 request ends the connection: the last one is never answered.
    assert statuses(raw) == [200, 302, 200, 302]
    assert raw.index(b'{"instance":"unit-1"}') < raw.index(b"location: http://s2.origin-cluster/a")
    assert raw.index(b"location: http://cdn.test/s3/b") > raw.index(b'"status":"ok"')
    assert raw.endswith(b"connection: close\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"BLAH\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "headers_too_large"),
        (
            b"POST /config HTTP/1.1\r\nContent-Length: 1100000\r\n\r\n" + b"{" * 1_100_000,
            413,
            "payload_too_large",
        ),
    ],
)
async def test_broken_requests_get_an_error_and_a_closed_connection(
    server: Running, request_bytes: bytes, status: int, error: str
) -> None:
    raw = await exchange(server.port, request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert statuses(head) == [status]
    assert b"connection: close" in head
    assert json.loads(body)["error"] == error


async def test_redirects_through_the_framework_answer_the_same() -> None:
    answers = {}
    for fast in (True, False):
        running = await start_redirector(redirector_fast_path=fast)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
                replies = [
                    await client.get("/", params={"video": video})
                    for video in (VIDEO, VIDEO, "https://evil.example/x")
                ]
        finally:
            await running.close()
        answers[fast] = [(r.status_code, r.headers.get("location"), r.content) for r in replies]
    assert answers[True] == answers[False]


async def _streaming_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes the request body in two chunks, without a Content-Length; fails on /boom."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"echo:", "more_body": True})
    await send({"type": "http.response.body", "body": body})


async def test_responses_without_length_are_chunked_and_failures_are_500() -> None:
    running = await start(_streaming_app, None, host="127.0.0.1", port=free_port(), limits=Limits())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            echo = await client.post("/echo", content=b"hello")
            boom = await client.get("/boom")
    finally:
        await running.close()
    assert echo.headers["transfer-encoding"] == "chunked"
    assert echo.content == b"echo:hello"
    assert boom.status_code == 500 and boom.json()["error"] == "internal_error"


async def test_idle_connections_are_closed_busy_ones_kept() -> None:
    running = await start_redirector(redirector_keep_alive_seconds=0.3)
    request = b"GET /?video=" + VIDEO.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", running.port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", running.port)
        idle_writer.write(request)
        for _ in range(12):
            busy_writer.write(request)
            assert b"302 Found" in await busy_reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.05)
        assert b"302 Found" in await idle_reader.readuntil(b"\r\n\r\n")
        assert await asyncio.wait_for(idle_reader.read(), 1) == b""
        busy_writer.write(request)
        assert b"302 Found" in await busy_reader.readuntil(b"\r\n\r\n")
        # Stopping the server closes the idle keep-alive connection it still holds.
        await asyncio.wait_for(running.close(), 2)
        assert await asyncio.wait_for(busy_reader.read(), 1) == b""
    finally:
        await running.close()


async def test_sticky_viewers_keep_their_side() -> None:
    running = await start_redirector(redirector_sticky=True, redirector_ratio=3)
    viewers = [f"viewer-{n}" for n in range(12)]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as client:
            sides = {
                viewer: {
                    (
                        await client.get(
                            "/", params={"video": VIDEO}, headers={"X-Viewer-Id": viewer}
                        )
                    ).headers["location"]
                    == VIDEO
                    for _ in range(3)
                }
                for viewer in viewers
            }
    finally:
        await running.close()
    assert sides == {viewer: {viewer_bucket(viewer, 3)} for viewer in viewers}
    assert {True, False} <= set().union(*sides.values())
