"""The edge's object route decision (``answer``) against a stand-in cache: the cache key of
either credential, refusals that never reach the cache, conditional GETs and what is sent."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import cast

import pytest

from services.edge.hotpath import Reply, answer
from services.edge.service import Edge, KnownMissing, Served
from services.edge.store import Entry
from shared.core.errors import NotFound
from shared.core.signing import Credentials, Signer

PREFIX = "videos/v1/hls/"
KEY = PREFIX + "720p/seg_00001.m4s"
GONE = PREFIX + "720p/gone.m4s"
DATA = os.urandom(1000)
ETAG = '"abc"'
LAST_MODIFIED = "Tue, 01 Oct 2024 10:00:00 GMT"
SIGNER = Signer({"k1": "unit-test-secret-0123456789"}, "k1")


class Disk:
    def body_path(self, key: str) -> Path:
        return Path("/cache") / f"{key.replace('/', '_')}.body"


class StubEdge:
    """What ``answer`` asks of the edge: an id, lookups, hot bodies and body paths."""

    edge_id = "edge-t"

    def __init__(self, *, in_memory: bool = True) -> None:
        self.asked: list[str] = []
        self.in_memory = in_memory
        self.disk = Disk()

    async def get(self, key: str) -> Served:
        self.asked.append(key)
        if key == GONE:
            raise KnownMissing("no such object at the origin")
        if key != KEY:
            raise NotFound(f"{key} does not exist")
        entry = Entry(
            key=key,
            size=len(DATA),
            content_type="video/iso.segment",
            etag=ETAG,
            last_modified=LAST_MODIFIED,
            cache_control="public, max-age=60",
            received_at=time.time(),
            origin_age=0.0,
            ttl_seconds=60.0,
            swr_seconds=0.0,
            sie_seconds=0.0,
        )
        return Served(entry, DATA if self.in_memory else None, "HIT")

    async def hot_body(self, served: Served) -> bytes | None:
        return served.body


async def ask(
    path: str,
    query: str = "",
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    edge: StubEdge | None = None,
) -> Reply:
    stub = edge or StubEdge()
    return await answer(cast(Edge, stub), Credentials(SIGNER), method, path, query, headers or {})


def query_url() -> tuple[str, str]:
    return f"/origin/{KEY}", SIGNER.sign(KEY, 60).query()


def header(reply: Reply, name: str) -> str | None:
    return dict(reply.headers).get(name)


async def test_either_credential_names_the_object_alone_as_the_cache_key() -> None:
    edge = StubEdge()
    await ask(*query_url(), edge=edge)
    await ask(f"/origin/t/{SIGNER.make_token(PREFIX, 60)}/{KEY}", edge=edge)
    assert edge.asked == [KEY, KEY]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (f"/origin/{KEY}", ""),
        (f"/origin/{KEY}", SIGNER.sign(KEY, -5).query()),
        (f"/origin/{KEY}", SIGNER.sign(PREFIX + "720p/seg_00002.m4s", 60).query()),
        (f"/origin/t/{SIGNER.make_token('videos/other/', 60)}/{KEY}", ""),
    ],
)
async def test_refused_credentials_never_reach_the_cache(path: str, query: str) -> None:
    edge = StubEdge()
    reply = await ask(path, query, edge=edge)
    assert reply.status == 403 and edge.asked == []
    assert json.loads(reply.body)["error"] == "forbidden"
    assert header(reply, "x-edge-id") == "edge-t"


async def test_a_hit_from_memory_is_sent_as_one_body_with_its_validators() -> None:
    reply = await ask(*query_url())
    assert (reply.status, reply.body, reply.path) == (200, DATA, None)
    assert header(reply, "etag") == ETAG
    assert header(reply, "last-modified") == LAST_MODIFIED
    assert header(reply, "content-length") == str(len(DATA))
    assert header(reply, "x-cache") == "HIT"


@pytest.mark.parametrize(
    ("headers", "status", "part"),
    [
        ({"range": "bytes=10-19"}, 206, (10, 19)),
        ({"range": "bytes=10-19", "if-range": ETAG}, 206, (10, 19)),
        ({"range": "bytes=10-19", "if-range": '"old"'}, 200, None),
        ({"range": "bytes=10-19", "if-range": f"W/{ETAG}"}, 200, None),
        ({"range": "bytes=10-19", "if-range": LAST_MODIFIED}, 206, (10, 19)),
        ({"range": "bytes=10-19", "if-range": "Mon, 30 Sep 2024 10:00:00 GMT"}, 200, None),
        ({"if-none-match": f"W/{ETAG}"}, 304, None),
        ({"if-modified-since": LAST_MODIFIED}, 304, None),
    ],
)
async def test_conditional_requests(
    headers: dict[str, str], status: int, part: tuple[int, int] | None
) -> None:
    reply = await ask(*query_url(), headers)
    assert reply.status == status
    if status == 304:
        assert reply.body == b"" and header(reply, "content-length") is None
        return
    start, end = part or (0, len(DATA) - 1)
    assert reply.body == DATA[start : end + 1]
    assert header(reply, "content-length") == str(end - start + 1)
    expected_range = f"bytes {start}-{end}/{len(DATA)}" if part else None
    assert header(reply, "content-range") == expected_range


async def test_an_unsatisfiable_range_is_the_origins_json_416() -> None:
    reply = await ask(*query_url(), {"range": f"bytes={len(DATA)}-"})
    assert reply.status == 416
    assert header(reply, "content-range") == f"bytes */{len(DATA)}"
    assert reply.body.startswith(b'{"error":"range_not_satisfiable","detail":')
    assert header(reply, "content-length") == str(len(reply.body))
    assert header(reply, "etag") is None and header(reply, "cache-control") == "no-store"


async def test_head_and_other_methods() -> None:
    head = await ask(*query_url(), method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert header(head, "content-length") == str(len(DATA))
    post = await ask(*query_url(), method="POST")
    assert post.status == 405 and header(post, "allow") == "GET, HEAD"


async def test_a_body_not_in_memory_is_sent_from_its_file_by_range() -> None:
    edge = StubEdge(in_memory=False)
    reply = await ask(*query_url(), {"range": "bytes=-100"}, edge=edge)
    assert reply.status == 206 and reply.body == b""
    assert reply.path == str(edge.disk.body_path(KEY))
    assert (reply.start, reply.end) == (len(DATA) - 100, len(DATA) - 1)


async def test_a_missing_object_is_a_404_from_the_cache() -> None:
    key = PREFIX + "720p/nope.m4s"
    reply = await ask(f"/origin/{key}", SIGNER.sign(key, 60).query())
    assert reply.status == 404 and json.loads(reply.body)["error"] == "not_found"
    assert header(reply, "x-cache") == "MISS"


async def test_a_remembered_404_is_answered_as_a_cache_hit() -> None:
    reply = await ask(f"/origin/{GONE}", SIGNER.sign(GONE, 60).query())
    assert reply.status == 404 and json.loads(reply.body)["error"] == "not_found"
    assert header(reply, "x-cache") == "HIT"
    assert header(reply, "cache-control") == "no-store"
