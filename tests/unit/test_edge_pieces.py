"""The edge's pure pieces: freshness policy, entry ages, the memory tier's LRU, next segments."""

from __future__ import annotations

import pytest

from services.edge.freshness import parse_cache_control, policy_for
from services.edge.service import next_segment_key
from services.edge.store import Entry, MemoryTier, charge_of


def policy(header: str | None, max_ttl: float = 3600):  # type: ignore[no-untyped-def]
    return policy_for(
        header, max_ttl_seconds=max_ttl, default_swr_seconds=5, default_sie_seconds=60
    )


def test_cache_control_directives_are_parsed_case_blind_and_unquoted() -> None:
    assert parse_cache_control('Public, MAX-AGE="60", immutable') == {
        "public": None,
        "max-age": "60",
        "immutable": None,
    }
    assert parse_cache_control(None) == {}


@pytest.mark.parametrize(
    ("header", "storable", "ttl", "swr", "sie"),
    [
        ("public, max-age=60", True, 60, 5, 60),
        ("public, max-age=60, s-maxage=10", True, 10, 5, 60),
        ("public, max-age=999999", True, 3600, 5, 60),
        ("private, max-age=60", False, 60, 5, 60),
        ("no-store", False, 0, 5, 60),
        ("no-cache, max-age=60", True, 0, 5, 60),
        ("max-age=60, must-revalidate", True, 60, 0, 0),
        ("max-age=60, stale-while-revalidate=7, stale-if-error=9", True, 60, 7, 9),
        ("max-age=bogus", True, 0, 5, 60),
        (None, True, 0, 5, 60),
    ],
)
def test_policy_for(header: str | None, storable: bool, ttl: float, swr: float, sie: float) -> None:
    got = policy(header)
    assert (got.storable, got.ttl_seconds) == (storable, ttl)
    assert (got.stale_while_revalidate_seconds, got.stale_if_error_seconds) == (swr, sie)


def entry(**overrides: object) -> Entry:
    fields: dict[str, object] = {
        "key": "videos/a/seg_00001.m4s",
        "size": 10,
        "content_type": "video/iso.segment",
        "etag": '"x"',
        "last_modified": None,
        "cache_control": "max-age=10",
        "received_at": 1000.0,
        "origin_age": 2.0,
        "ttl_seconds": 10.0,
        "swr_seconds": 5.0,
        "sie_seconds": 60.0,
    }
    fields.update(overrides)
    return Entry(**fields)  # type: ignore[arg-type]


def test_entry_age_counts_the_origins_age_and_never_runs_backwards() -> None:
    e = entry()
    assert e.age(1003.0) == 5.0
    assert e.age(900.0) == 2.0  # a clock stepped back does not make it younger than received
    assert e.fresh(1007.9) and not e.fresh(1008.0)
    assert e.within_swr(1012.9) and not e.within_swr(1013.0)
    assert e.within_sie(1067.9) and not e.within_sie(1068.0)


def test_disk_charge_is_whole_blocks() -> None:
    assert [charge_of(n) for n in (0, 1, 4096, 4097)] == [0, 4096, 4096, 8192]


def test_memory_tier_evicts_least_recently_used_first() -> None:
    tier = MemoryTier(max_bytes=30, max_object_bytes=20)
    tier.put("a", b"a" * 10)
    tier.put("b", b"b" * 10)
    tier.put("c", b"c" * 10)
    assert tier.get("a") is not None  # a is now the most recently used
    tier.put("d", b"d" * 10)
    assert tier.get("b") is None
    assert [k for k in "acd" if tier.get(k) is not None] == ["a", "c", "d"]
    assert tier.used == 30


def test_memory_tier_refuses_big_objects_and_replaces_in_place() -> None:
    tier = MemoryTier(max_bytes=30, max_object_bytes=20)
    tier.put("big", b"x" * 21)
    assert tier.get("big") is None and tier.used == 0
    tier.put("a", b"a" * 10)
    tier.put("a", b"A" * 5)
    assert tier.get("a") == b"A" * 5 and tier.used == 5
    tier.drop("a")
    assert tier.used == 0


@pytest.mark.parametrize(
    ("key", "following"),
    [
        ("videos/v/hls/720p/seg_00001.m4s", "videos/v/hls/720p/seg_00002.m4s"),
        ("videos/v/hls/720p/seg_00009.m4s", "videos/v/hls/720p/seg_00010.m4s"),
        ("videos/v/hls/720p/seg_99.ts", "videos/v/hls/720p/seg_100.ts"),
        ("videos/v/hls/720p/init.mp4", None),
        ("videos/v/hls/720p/index.m3u8", None),
    ],
)
def test_next_segment_key(key: str, following: str | None) -> None:
    assert next_segment_key(key) == following
