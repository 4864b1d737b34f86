"""Streamed writes to the filesystem store: batched, ordered, durable, nothing left on failure."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.storage.filesystem import WRITE_BATCH_BYTES, FilesystemStore


async def _pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    offset = 0
    index = 0
    while offset < len(data):
        size = sizes[index % len(sizes)]
        yield data[offset : offset + size]
        offset += size
        index += 1


@pytest.mark.parametrize(
    "sizes",
    [[1], [7, 16_384, 3], [WRITE_BATCH_BYTES - 1, 2], [3 * WRITE_BATCH_BYTES]],
    ids=["bytes", "mixed", "around-a-batch", "bigger-than-a-batch"],
)
async def test_chunks_of_any_size_are_stored_in_order(tmp_path: Path, sizes: list[int]) -> None:
    # Single bytes make far more iovecs than one writev takes.
    length = 3 * WRITE_BATCH_BYTES + 12_345 if sizes != [1] else 70_000
    data = os.urandom(length)
    store = FilesystemStore(tmp_path)

    info = await store.put_stream("videos/a/source", _pieces(data, sizes))

    assert info.size == len(data)
    stored = store.path_for("videos/a/source").read_bytes()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


async def test_a_source_failing_after_batches_were_written_leaves_nothing(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield os.urandom(WRITE_BATCH_BYTES // 2 + 1)
        raise ConnectionError("client went away")

    store = FilesystemStore(tmp_path)
    with pytest.raises(ConnectionError):
        await store.put_stream("videos/b/source", broken())

    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
