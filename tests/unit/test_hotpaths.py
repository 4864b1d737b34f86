"""The hot-path cost probe drives the real paths: every redirect answered, every segment relayed."""

from __future__ import annotations

from load_tests.hotpaths import BODY_BYTES, proxy_cost, redirect_cost


async def test_every_probed_redirect_is_answered_with_a_redirect() -> None:
    cost, transport = await redirect_cost(200, 2)
    assert cost > 0
    assert transport.writes == 400
    # The first answer of a ratio goes to the origin: a 302 there, never an error.
    assert transport.first.startswith(b"HTTP/1.1 302 ")
    assert b"\r\nlocation: http://s1.origin-cluster/video/" in transport.first


async def test_every_probed_segment_reaches_the_viewer_whole() -> None:
    cost, transport = await proxy_cost(50, 2)
    assert cost > 0
    assert transport.first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-backend: b" in transport.first
    per_request = transport.written / 100
    assert BODY_BYTES < per_request < BODY_BYTES + 1024
