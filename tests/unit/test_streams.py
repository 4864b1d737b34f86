"""Byte limits and RFC 9530 digests computed while a body streams."""

from __future__ import annotations

import base64
import hashlib

import pytest

from shared.core.errors import BadRequest, DigestMismatch, PayloadTooLarge
from shared.core.streams import MeteredStream, check_digest, parse_content_digest


async def _chunks(*parts: bytes):  # type: ignore[no-untyped-def]
    for part in parts:
        yield part


async def test_metered_stream_counts_and_hashes() -> None:
    stream = MeteredStream(_chunks(b"abc", b"", b"def"), max_bytes=10)
    assert b"".join([c async for c in stream]) == b"abcdef"
    assert stream.size == 6
    assert stream.sha256_hex == hashlib.sha256(b"abcdef").hexdigest()


async def test_metered_stream_stops_at_the_limit() -> None:
    stream = MeteredStream(_chunks(b"12345", b"678"), max_bytes=6)
    seen = []
    with pytest.raises(PayloadTooLarge) as caught:
        async for chunk in stream:
            seen.append(chunk)
    assert seen == [b"12345"]
    assert caught.value.status == 413
    assert caught.value.body()["max_bytes"] == 6


def test_content_digest_parsing() -> None:
    digest = hashlib.sha256(b"x").digest()
    other = base64.b64encode(b"z" * 64).decode()
    header = f"sha-512=:{other}:, sha-256=:{base64.b64encode(digest).decode()}:"
    assert parse_content_digest(header) == digest
    assert parse_content_digest(None) is None
    with pytest.raises(BadRequest):
        parse_content_digest("sha-256=abc")
    with pytest.raises(BadRequest, match="no sha-256"):
        parse_content_digest(f"sha-512=:{base64.b64encode(b'z').decode()}:")


def test_check_digest() -> None:
    check_digest(None, b"anything")
    check_digest(b"same", b"same")
    with pytest.raises(DigestMismatch) as caught:
        check_digest(b"one", b"two")
    assert caught.value.status == 400


async def test_metered_stream_checks_the_digest_after_the_last_chunk() -> None:
    good = MeteredStream(_chunks(b"ab", b"c"), 10, hashlib.sha256(b"abc").digest())
    assert [c async for c in good] == [b"ab", b"c"]

    bad = MeteredStream(_chunks(b"ab", b"c"), 10, hashlib.sha256(b"abd").digest())
    seen = []
    with pytest.raises(DigestMismatch) as caught:
        async for chunk in bad:
            seen.append(chunk)
    assert seen == [b"ab", b"c"]
    assert (
        caught.value.body()["received"]
        == base64.b64encode(hashlib.sha256(b"abc").digest()).decode()
    )


async def test_background_hashing_keeps_the_order_of_many_batches() -> None:
    # Uneven chunks, 24 MiB in all: many batches go to the hashing thread, some while the
    # stream waits for it; the digest is still that of the bytes in order.
    parts = [bytes([i % 251]) * (300_000 + 7919 * i) for i in range(60)]
    whole = b"".join(parts)
    stream = MeteredStream(_chunks(*parts), len(whole), hashlib.sha256(whole).digest())
    assert [len(c) async for c in stream] == [len(p) for p in parts]
    assert stream.sha256_hex == hashlib.sha256(whole).hexdigest()

    swapped = [parts[1], parts[0], *parts[2:]]
    out_of_order = MeteredStream(_chunks(*swapped), len(whole), hashlib.sha256(whole).digest())
    with pytest.raises(DigestMismatch):
        async for _ in out_of_order:
            pass
