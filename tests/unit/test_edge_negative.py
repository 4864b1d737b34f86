"""The edge's memory of missing objects: one origin request per key and TTL, bounded in size,
forgotten on purge, and a later upload served once the TTL has passed.

The origin is the one remote peer faked here (``httpx.MockTransport``); the edge is the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.edge.service import MISS, Edge, KnownMissing
from services.edge.settings import Settings
from services.edge.store import NegativeCache
from shared.core.errors import NotFound
from shared.core.signing import Signer

KEY = "videos/v1/hls/720p/seg_00001.m4s"
TTL = 0.3


class Origin:
    """Answers 404 until an object is stored; counts the requests for each key."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.url.path.removeprefix("/origin/")
        self.asked.append(key)
        body = self.objects.get(key)
        if body is None:
            return httpx.Response(404, json={"error": "not_found", "detail": "no such object"})
        headers = {"cache-control": "public, max-age=0", "content-length": str(len(body))}
        # A stream, as a real answer is: the edge reads it with ``aiter_raw``.
        return httpx.Response(200, stream=httpx.ByteStream(body), headers=headers)


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
async def edge(tmp_path: Path, origin: Origin) -> AsyncIterator[Edge]:
    settings = Settings(
        edge_cache_dir=tmp_path,
        edge_negative_ttl_seconds=TTL,
        edge_negative_max_entries=100,
        edge_prefetch_next_segment=True,
        signing_secret="unit-test-secret-0123456789",
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(origin)) as http:
        cache = Edge(settings, http, Signer.from_settings(settings))
        await cache.start()
        try:
            yield cache
        finally:
            await cache.stop()


async def test_a_missing_object_costs_one_origin_request_per_ttl(
    edge: Edge, origin: Origin
) -> None:
    with pytest.raises(NotFound) as first:
        await edge.get(KEY)
    assert not isinstance(first.value, KnownMissing)
    for _ in range(50):
        with pytest.raises(KnownMissing) as again:
            await edge.get(KEY)
    assert again.value.status == 404 and again.value.detail == first.value.detail
    assert origin.asked.count(KEY) == 1
    origin.objects[KEY] = b"uploaded later"
    await asyncio.sleep(TTL + 0.05)
    served = await edge.get(KEY)
    assert (served.result, served.body) == (MISS, b"uploaded later")
    assert origin.asked.count(KEY) == 2


async def test_a_known_missing_next_segment_is_not_prefetched_again(
    edge: Edge, origin: Origin
) -> None:
    following = KEY.replace("00001", "00002")
    origin.objects[KEY] = b"segment one"
    await edge.get(KEY)
    await asyncio.sleep(0.05)
    assert origin.asked.count(following) == 1  # prefetched, found missing
    await edge.purge([KEY], [])
    await edge.get(KEY)
    await asyncio.sleep(0.05)
    assert origin.asked.count(following) == 1


async def test_a_404_drops_a_stale_copy_and_purge_forgets_the_404(
    edge: Edge, origin: Origin
) -> None:
    origin.objects[KEY] = b"soon deleted"
    await edge.get(KEY)  # max-age=0: stored, stale at once
    del origin.objects[KEY]
    with pytest.raises(NotFound):
        await edge.get(KEY)
    assert edge.disk.get(KEY) is None
    with pytest.raises(KnownMissing):
        await edge.get(KEY)
    await edge.purge([], ["videos/v1/"])
    origin.objects[KEY] = b"back again"
    assert (await edge.get(KEY)).body == b"back again"


def test_the_memory_is_bounded_oldest_first_and_can_be_turned_off() -> None:
    missing = NegativeCache(ttl_seconds=5, max_entries=3)
    for i in range(10):
        missing.remember(f"k{i}", now=100.0)
    assert len(missing) == 3 and missing.keys() == ["k7", "k8", "k9"]
    assert missing.missing("k9", now=104.9) and not missing.missing("k9", now=105.0)
    assert len(missing) == 2  # an expired entry goes when it is looked up
    missing.forget(["k7"])
    assert not missing.missing("k7", now=100.0)
    off = NegativeCache(ttl_seconds=0, max_entries=3)
    off.remember("k", now=100.0)
    assert not off.missing("k", now=100.0) and len(off) == 0
