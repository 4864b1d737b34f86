"""One contract for every object-store backend: each test runs on the filesystem and on S3."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.core.errors import BadRequest, NotFound
from shared.storage.base import ObjectStore
from shared.storage.s3 import S3Store
from shared.videos.ingest import probe_stored
from tests.support.media import make_clip

MIB = 1024 * 1024


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def read_all(store: ObjectStore, key: str, **kwargs: int) -> bytes:
    return b"".join([chunk async for chunk in store.get_stream(key, **kwargs)])


def incomplete_s3_uploads(store: ObjectStore) -> list[str]:
    """Multipart uploads S3 still holds (none for the filesystem store)."""
    if not isinstance(store, S3Store):
        return []
    result = store._client._list_multipart_uploads(store.bucket)
    return [upload.object_name for upload in result.uploads]


async def test_put_stream_then_stat_and_get_stream(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes

    info = await store.put_stream("videos/1/source", chunks_of(data, 1000))

    assert info.key == "videos/1/source"
    assert info.size == len(data)
    assert info.etag
    stat = await store.stat("videos/1/source")
    assert (stat.size, stat.etag) == (len(data), info.etag)
    assert await read_all(store, "videos/1/source") == data


async def test_get_stream_ranges(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    await store.put_bytes("r/obj", data)

    assert await read_all(store, "r/obj", start=0, end=0) == data[:1]
    assert await read_all(store, "r/obj", start=100, end=199) == data[100:200]
    assert await read_all(store, "r/obj", start=9_000) == data[9_000:]
    assert await read_all(store, "r/obj", start=9_990, end=50_000) == data[9_990:]
    assert await read_all(store, "r/obj", start=10_000) == b""


async def test_get_stream_honours_chunk_size(store: ObjectStore) -> None:
    data = os.urandom(10_000)
    await store.put_bytes("c/obj", data)

    chunks = [c async for c in store.get_stream("c/obj", start=1, end=8_000, chunk_size=1_000)]

    assert b"".join(chunks) == data[1:8_001]
    assert all(len(chunk) <= 1_000 for chunk in chunks)
    assert len(chunks) >= 8


async def test_put_replaces_and_content_type_follows_key(store: ObjectStore) -> None:
    await store.put_bytes("hls/index.m3u8", b"#EXTM3U\n")
    info = await store.put_bytes("hls/index.m3u8", b"#EXTM3U\n#EXT-X-VERSION:7\n")

    assert await store.get_bytes("hls/index.m3u8") == b"#EXTM3U\n#EXT-X-VERSION:7\n"
    assert info.content_type == "application/vnd.apple.mpegurl"
    assert (await store.stat("hls/index.m3u8")).content_type == "application/vnd.apple.mpegurl"


async def test_empty_object(store: ObjectStore) -> None:
    await store.put_bytes("empty", b"")

    assert (await store.stat("empty")).size == 0
    assert await store.get_bytes("empty") == b""


async def test_put_file_and_download_file(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(300_000))
    target = tmp_path / "out.bin"

    info = await store.put_file("files/in.bin", source)
    await store.download_file("files/in.bin", target)

    assert info.size == 300_000
    assert target.read_bytes() == source.read_bytes()


async def test_exists(store: ObjectStore) -> None:
    await store.put_bytes("here", b"x")

    assert await store.exists("here")
    assert not await store.exists("missing")
    assert not await store.exists("here/below")


async def test_local_path_is_the_object_file_or_none(store: ObjectStore) -> None:
    await store.put_bytes("videos/v/hls/seg_00001.m4s", b"segment bytes")

    local = store.local_path("videos/v/hls/seg_00001.m4s")
    if isinstance(store, S3Store):
        assert local is None
    else:
        assert local is not None and local.read_bytes() == b"segment bytes"
    with pytest.raises(BadRequest):
        store.local_path("../outside")


async def test_list_is_sorted_recursive_and_prefix_filtered(store: ObjectStore) -> None:
    keys = ["v/b/2.m4s", "v/a/1.m4s", "v/a/sub/deep.txt", "v/ab", "w/other", "v/b/10.m4s"]
    for key in keys:
        await store.put_bytes(key, key.encode())

    listed = await store.list("v/")

    assert [info.key for info in listed] == sorted(k for k in keys if k.startswith("v/"))
    assert {info.key: info.size for info in listed}["v/a/sub/deep.txt"] == len(b"v/a/sub/deep.txt")
    assert [info.key for info in await store.list("v/a")] == [
        "v/a/1.m4s",
        "v/a/sub/deep.txt",
        "v/ab",
    ]
    assert [info.key for info in await store.list("v/a/")] == ["v/a/1.m4s", "v/a/sub/deep.txt"]
    assert [info.key for info in await store.list("")] == sorted(keys)
    assert await store.list("nothing/") == []


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put_bytes("d/obj", b"x")

    await store.delete("d/obj")
    await store.delete("d/obj")
    await store.delete("never/existed")

    assert not await store.exists("d/obj")
    assert await store.list("d/") == []


async def test_delete_prefix(store: ObjectStore) -> None:
    for key in ["p/1", "p/2", "p/sub/3", "pp/keep", "q/keep"]:
        await store.put_bytes(key, b"x")

    assert await store.delete_prefix("p/") == 3
    assert await store.delete_prefix("p/") == 0
    assert [info.key for info in await store.list("")] == ["pp/keep", "q/keep"]


async def test_missing_objects_raise_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await store.stat("missing/key")
    with pytest.raises(NotFound):
        await read_all(store, "missing/key")
    with pytest.raises(NotFound):
        await read_all(store, "missing/key", start=5, end=2)
    with pytest.raises(NotFound):
        await store.download_file("missing/key", tmp_path / "out")


@pytest.mark.parametrize(
    "key", ["", "../escape", "a/../../b", "/absolute", "a//b", "dir/", ".hidden", "sp ace"]
)
async def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(BadRequest):
        await store.put_bytes(key, b"x")
    with pytest.raises(BadRequest):
        await store.stat(key)
    with pytest.raises(BadRequest):
        await read_all(store, key)
    with pytest.raises(BadRequest):
        await store.delete(key)
    with pytest.raises(BadRequest):
        await store.create_multipart(key)


async def test_failing_source_leaves_no_object(store: ObjectStore) -> None:
    class SourceBroke(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        # Past the first S3 part, so a multipart upload is under way when it fails.
        for _ in range(12):
            yield os.urandom(MIB)
        raise SourceBroke

    with pytest.raises(SourceBroke):
        await store.put_stream("broken/obj", broken())

    assert not await store.exists("broken/obj")
    assert await store.list("") == []
    assert incomplete_s3_uploads(store) == []


async def test_failing_source_keeps_the_previous_version(store: ObjectStore) -> None:
    await store.put_bytes("keep/obj", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await store.put_stream("keep/obj", broken())

    assert await store.get_bytes("keep/obj") == b"old"


async def test_large_streamed_put_round_trips(store: ObjectStore) -> None:
    data = os.urandom(20 * MIB + 12_345)

    info = await store.put_stream("big/obj", chunks_of(data, 256 * 1024))

    assert info.size == len(data)
    digest = hashlib.sha256()
    async for chunk in store.get_stream("big/obj"):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    tail = await read_all(store, "big/obj", start=len(data) - 100_000, end=len(data) + 10)
    assert tail == data[-100_000:]


async def test_multipart_round_trips(store: ObjectStore) -> None:
    part_bytes = max(store.min_part_bytes, MIB)
    parts_data = [os.urandom(part_bytes), os.urandom(part_bytes + 17), os.urandom(1_000)]
    upload_id = await store.create_multipart("mp/obj")

    # Out of order, with part 2 sent twice: the second copy replaces the first.
    etags: dict[int, str] = {}
    etags[2] = await store.upload_part("mp/obj", upload_id, 2, chunks_of(os.urandom(part_bytes)))
    etags[3] = await store.upload_part("mp/obj", upload_id, 3, chunks_of(parts_data[2]))
    etags[1] = await store.upload_part("mp/obj", upload_id, 1, chunks_of(parts_data[0]))
    etags[2] = await store.upload_part("mp/obj", upload_id, 2, chunks_of(parts_data[1]))
    assert not await store.exists("mp/obj")
    assert await store.list("") == []

    info = await store.complete_multipart("mp/obj", upload_id, sorted(etags.items()))

    data = b"".join(parts_data)
    assert info.size == len(data)
    assert hashlib.sha256(await store.get_bytes("mp/obj")).digest() == hashlib.sha256(data).digest()
    assert [i.key for i in await store.list("")] == ["mp/obj"]
    assert incomplete_s3_uploads(store) == []


async def test_multipart_abort_leaves_nothing(store: ObjectStore) -> None:
    upload_id = await store.create_multipart("mp/aborted")
    await store.upload_part("mp/aborted", upload_id, 1, chunks_of(os.urandom(store.min_part_bytes)))

    await store.abort_multipart("mp/aborted", upload_id)
    await store.abort_multipart("mp/aborted", upload_id)

    assert await store.list("") == []
    assert not await store.exists("mp/aborted")
    assert incomplete_s3_uploads(store) == []


async def test_multipart_rejects_bad_part_lists(store: ObjectStore) -> None:
    upload_id = await store.create_multipart("mp/bad")
    small = os.urandom(store.min_part_bytes - 1)
    etag1 = await store.upload_part("mp/bad", upload_id, 1, chunks_of(small))
    etag2 = await store.upload_part("mp/bad", upload_id, 2, chunks_of(b"tail"))

    for parts in ([], [(2, etag2), (1, etag1)], [(1, etag1), (1, etag1)]):
        with pytest.raises(BadRequest):
            await store.complete_multipart("mp/bad", upload_id, parts)
    with pytest.raises(BadRequest):
        await store.complete_multipart("mp/bad", upload_id, [(1, "0" * 32)])
    with pytest.raises(BadRequest):  # every part but the last needs min_part_bytes
        await store.complete_multipart("mp/bad", upload_id, [(1, etag1), (2, etag2)])
    with pytest.raises(BadRequest):
        await store.upload_part("mp/bad", upload_id, 0, chunks_of(b"x"))

    await store.abort_multipart("mp/bad", upload_id)
    assert not await store.exists("mp/bad")


async def test_unknown_uploads_are_not_found(store: ObjectStore) -> None:
    if isinstance(store, S3Store):
        pytest.skip("moto answers 500 for unknown upload ids where S3 answers NoSuchUpload")
    upload_id = await store.create_multipart("mp/one")
    etag = await store.upload_part("mp/one", upload_id, 1, chunks_of(b"x"))

    with pytest.raises(NotFound):
        await store.upload_part("mp/other", upload_id, 1, chunks_of(b"x"))
    with pytest.raises(NotFound):
        await store.complete_multipart("mp/other", upload_id, [(1, etag)])
    await store.abort_multipart("mp/other", upload_id)  # not this key's upload: a no-op
    await store.abort_multipart("mp/one", upload_id)
    with pytest.raises(NotFound):
        await store.upload_part("mp/one", upload_id, 2, chunks_of(b"late"))
    with pytest.raises(NotFound):
        await store.complete_multipart("mp/one", upload_id, [(1, etag)])
    with pytest.raises(NotFound):
        await store.upload_part("mp/one", "../../escape", 1, chunks_of(b"x"))


async def test_check_passes_on_a_usable_store(store: ObjectStore) -> None:
    await store.check()
    await store.put_bytes("ready", b"x")
    await store.check()


async def test_read_url_reads_ranges_where_the_store_has_one(
    store: ObjectStore, media_dir: Path
) -> None:
    data = os.urandom(256 * 1024)
    await store.put_bytes("url/obj.bin", data)
    url = await store.read_url("url/obj.bin", expires_seconds=60)
    if not isinstance(store, S3Store):
        assert url is None  # read in place: nothing to hand out
        return
    assert url is not None
    async with httpx.AsyncClient() as client:
        part = await client.get(url, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    # What finalize does with it: ffprobe reads the header over HTTP, no download.
    clip = make_clip(media_dir / "url-probe.mp4", seconds=2, size="320x180")
    await store.put_file("url/clip.mp4", clip)
    info = await probe_stored(store, "url/clip.mp4")
    assert info.has_video and 1.5 < info.duration_seconds < 2.5
