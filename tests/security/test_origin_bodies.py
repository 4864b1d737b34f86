"""The origin takes no uploads: a body over ``ORIGIN_MAX_BODY_BYTES`` is refused with 413 JSON,
declared or streamed, before any route reads it; smaller ones reach the routes as before."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Processes
from tests.support.security import refused

LIMIT = 4096


@pytest.fixture(scope="module")
def origin(test_env: dict[str, str], test_root: Path) -> Iterator[str]:
    procs = Processes(test_root / "logs" / "origin-bodies", test_env)
    try:
        yield procs.service("origin", env={"ORIGIN_MAX_BODY_BYTES": str(LIMIT)}).url or ""
    finally:
        procs.stop_all()


def chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


def test_a_declared_body_over_the_bound_is_413(origin: str) -> None:
    video = f"{origin}/api/videos/{uuid.uuid4()}"
    big = httpx.patch(video, content=b"{" + b" " * (2 * 1024 * 1024) + b"}", timeout=30)
    refused(big, 413, error="payload_too_large", mentions=str(LIMIT))
    form = httpx.post(f"{origin}/api/auth/token", data={"username": "u" * (2 * LIMIT)}, timeout=30)
    refused(form, 413, error="payload_too_large")


def test_a_streamed_body_is_cut_at_the_bound(origin: str) -> None:
    # No Content-Length: chunked, refused once it passes the bound.
    response = httpx.patch(
        f"{origin}/api/videos/{uuid.uuid4()}",
        content=chunks(64 * LIMIT),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    refused(response, 413, error="payload_too_large")


def test_a_body_within_the_bound_reaches_the_route(origin: str) -> None:
    # Anonymous, so the route answers 401: the body was not what stopped it.
    small = httpx.patch(f"{origin}/api/videos/{uuid.uuid4()}", json={"title": "t"}, timeout=30)
    refused(small, 401)
    wrong = httpx.post(f"{origin}/api/auth/token", data={"username": "u", "password": "p"})
    refused(wrong, 401)
