"""The edge's disk tier: byte accounting in whole blocks, LRU eviction, and rebuilding on start."""

from __future__ import annotations

import os
from pathlib import Path

from services.edge.store import BLOCK_BYTES, DiskStore, Entry, charge_of

# Every small object costs one block of body and one block of metadata.
SMALL_CHARGE = 2 * BLOCK_BYTES


def entry(key: str, size: int) -> Entry:
    return Entry(
        key=key,
        size=size,
        content_type="video/iso.segment",
        etag='"e"',
        last_modified=None,
        cache_control="public, max-age=60",
        received_at=1000.0,
        origin_age=0.0,
        ttl_seconds=60.0,
        swr_seconds=0.0,
        sie_seconds=0.0,
    )


async def put(store: DiskStore, key: str, size: int = 100) -> bool:
    return await store.put(entry(key, size), os.urandom(size))


def files(root: Path) -> set[str]:
    return {p.suffix for p in root.iterdir()}


async def test_objects_are_charged_in_whole_blocks_of_body_and_metadata(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=64 * BLOCK_BYTES)
    await store.load()
    assert await put(store, "a", 100)
    assert await put(store, "b", BLOCK_BYTES + 1)
    assert store.used == SMALL_CHARGE + charge_of(BLOCK_BYTES + 1) + BLOCK_BYTES
    assert store.reserved == 0
    # Storing a key again replaces it instead of charging it twice.
    assert await put(store, "a", 200)
    assert store.used == SMALL_CHARGE + charge_of(BLOCK_BYTES + 1) + BLOCK_BYTES
    assert sorted(store.keys()) == ["a", "b"]
    assert store.read("a", 0, 199) == store.body_path("a").read_bytes()


async def test_the_least_recently_used_object_goes_first(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=3 * SMALL_CHARGE)
    await store.load()
    for key in "abc":
        assert await put(store, key)
    assert store.get("a") is not None  # a is now the most recently used
    assert await put(store, "d")
    assert store.keys() == ["c", "a", "d"]
    assert store.used == 3 * SMALL_CHARGE
    assert not store.body_path("b").exists()
    assert len(list(tmp_path.glob("*.meta"))) == 3


async def test_an_object_bigger_than_the_cap_is_refused_and_evicts_nothing(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=3 * SMALL_CHARGE)
    await store.load()
    assert await put(store, "a")
    assert not await put(store, "huge", 3 * SMALL_CHARGE)
    assert store.keys() == ["a"] and store.used == SMALL_CHARGE


async def test_removing_frees_the_charge_and_the_files(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=8 * SMALL_CHARGE)
    await store.load()
    for key in "abc":
        await put(store, key)
    assert await store.remove(["a", "c", "missing"]) == 2
    assert store.keys() == ["b"] and store.used == SMALL_CHARGE
    assert len(list(tmp_path.iterdir())) == 2  # b's body and metadata


async def test_a_restart_rebuilds_the_index_oldest_use_first_and_drops_leftovers(
    tmp_path: Path,
) -> None:
    first = DiskStore(tmp_path, max_bytes=8 * SMALL_CHARGE)
    await first.load()
    for key in "abc":
        await put(first, key)
    for at, key in enumerate("cab"):
        os.utime(first.body_path(key), (1_000_000 + at, 1_000_000 + at))
    (tmp_path / "half-written.tmp").write_bytes(b"x")
    (tmp_path / ("0" * 64 + ".body")).write_bytes(b"no metadata")
    # A smaller cap than before: the oldest use goes while loading.
    again = DiskStore(tmp_path, max_bytes=2 * SMALL_CHARGE)
    await again.load()
    assert again.keys() == ["a", "b"]
    assert again.used == 2 * SMALL_CHARGE
    assert files(tmp_path) == {".body", ".meta"}
    assert len(list(tmp_path.iterdir())) == 4
