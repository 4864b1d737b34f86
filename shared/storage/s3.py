"""S3 backend on the synchronous ``minio`` SDK, every blocking call run in a worker thread.

``put_stream`` does not know the object's length, so chunks cross into the thread running
``put_object`` through a bounded pipe: the event loop waits while the pipe is full, keeping memory
near one part (``part_bytes``) per upload. If the source fails, the thread's next read raises, and
``put_object`` aborts its multipart upload, so no object appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

import urllib3
from minio import Minio
from minio.datatypes import Object, Part
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.helpers import MIN_PART_SIZE

from shared.core.errors import BadRequest, NotFound, UpstreamUnavailable
from shared.core.keys import check_key
from shared.storage.base import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectStore,
    check_part_number,
    check_parts,
    guess_content_type,
)

_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchObject"})
_BAD_PART_CODES = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})
# Enough pooled connections for every thread of the default executor to hold one.
_POOL_CONNECTIONS = 32


class _SourceFailed(Exception):
    """Raised inside ``put_object``'s thread so minio aborts the multipart upload."""


class _Pipe:
    """Bytes from the event loop to a thread's blocking ``read()``, at most ``max_bytes`` queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_bytes: int) -> None:
        self._loop = loop
        self._max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._failed = False
        self._reader_gone = False
        self._space = asyncio.Event()
        self._head = memoryview(b"")

    # Event-loop side.

    async def write(self, chunk: bytes) -> bool:
        """Queue a chunk, waiting for room; False once the reader has stopped for good."""
        data = bytes(chunk)
        if not data:
            return True  # an empty read would mean end of stream to the reader
        while not self._reader_gone:
            self._space.clear()
            with self._cond:
                if not self._chunks or self._queued + len(data) <= self._max_bytes:
                    self._chunks.append(data)
                    self._queued += len(data)
                    self._cond.notify()
                    return True
            await self._space.wait()
        return False

    def close(self) -> None:
        """End of stream: the reader gets what is queued, then EOF."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def fail(self) -> None:
        """Make the reader's next ``read()`` raise."""
        with self._cond:
            self._failed = True
            self._chunks.clear()
            self._cond.notify()

    def reader_done(self, future: asyncio.Future[Any]) -> None:
        """Wake a waiting writer when the reading thread has finished, successfully or not."""
        self._reader_gone = True
        self._space.set()
        if not future.cancelled():
            # Mark the error seen: put_stream re-raises it, or was cancelled and no longer cares.
            future.exception()

    # Thread side.

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes (all of them if negative) unless the stream ends first."""
        wanted = size if size >= 0 else sys.maxsize
        # One join per call, so minio reading a part in one call copies each byte once.
        pieces: list[memoryview] = []
        while wanted > 0:
            if not self._head:
                chunk = self._next_chunk()
                if chunk is None:
                    break
                self._head = memoryview(chunk)
            piece = self._head[:wanted]
            self._head = self._head[len(piece) :]
            pieces.append(piece)
            wanted -= len(piece)
        return b"".join(pieces)

    def _next_chunk(self) -> bytes | None:
        with self._cond:
            while not self._chunks and not self._closed and not self._failed:
                self._cond.wait()
            if self._failed:
                raise _SourceFailed("the source of the upload failed")
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._queued -= len(chunk)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(self._space.set)
        return chunk


def _raise_if_missing(exc: S3Error, key: str) -> None:
    if exc.code in _MISSING_KEY_CODES:
        raise NotFound(f"object {key} does not exist") from None


def _upload_errors(exc: S3Error, key: str, upload_id: str) -> None:
    if exc.code == "NoSuchUpload":
        raise NotFound(f"multipart upload {upload_id} for {key} does not exist") from None
    if exc.code in _BAD_PART_CODES:
        raise BadRequest(exc.message or f"invalid parts for {key}") from None


def _content_type(key: str, content_type: str) -> str:
    # The filesystem store derives types from keys; do the same when the caller gave none.
    return guess_content_type(key) if content_type == DEFAULT_CONTENT_TYPE else content_type


def _info(key: str, obj: Object, content_type: str | None = None) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=obj.size or 0,
        etag=obj.etag or "",
        last_modified=obj.last_modified or datetime.now(UTC),
        content_type=content_type or obj.content_type or guess_content_type(key),
    )


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accept ``host:port`` as minio wants it, or a URL whose scheme decides TLS."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return endpoint.rstrip("/"), secure
    return rest.rstrip("/"), scheme == "https"


class S3Store(ObjectStore):
    min_part_bytes = MIN_PART_SIZE

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        part_bytes: int = 16 * 1024 * 1024,
        pipe_bytes: int = 4 * CHUNK_BYTES,
        connect_timeout_seconds: float = 10.0,
        read_timeout_seconds: float = 120.0,
    ) -> None:
        if part_bytes < MIN_PART_SIZE:
            raise ValueError(f"part_bytes must be at least {MIN_PART_SIZE}")
        host, secure = _split_endpoint(endpoint, secure)
        self.bucket = bucket
        self._part_bytes = part_bytes
        self._pipe_bytes = pipe_bytes
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_seconds, read=read_timeout_seconds),
            maxsize=_POOL_CONNECTIONS,
            cert_reqs="CERT_REQUIRED",
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._client = Minio(
            host,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()

    async def _ready(self) -> None:
        """Create the bucket on first use."""
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await asyncio.to_thread(self._create_bucket)
                self._bucket_ready = True

    def _create_bucket(self) -> None:
        if self._client.bucket_exists(self.bucket):
            return
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":  # another process won the race
                raise

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        check_key(key)
        await self._ready()
        pipe = _Pipe(asyncio.get_running_loop(), self._pipe_bytes)
        upload = asyncio.ensure_future(
            asyncio.to_thread(
                self._client.put_object,
                self.bucket,
                key,
                cast(BinaryIO, pipe),  # minio only calls read()
                -1,
                content_type=_content_type(key, content_type),
                part_size=self._part_bytes,
                # One part in flight: parallel parts would multiply memory, and minio leaks its
                # worker threads when a read fails mid-upload.
                num_parallel_uploads=1,
            )
        )
        upload.add_done_callback(pipe.reader_done)
        try:
            async for chunk in chunks:
                if not await pipe.write(chunk):
                    break  # the upload failed; awaiting it raises why
            pipe.close()
            await upload
        except BaseException as exc:
            pipe.fail()
            if not isinstance(exc, asyncio.CancelledError):
                # Let the thread abort the multipart upload before the caller moves on.
                with contextlib.suppress(Exception):
                    await upload
            raise
        return await self.stat(key)

    async def put_file(
        self, key: str, path: Path, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        check_key(key)
        await self._ready()
        await asyncio.to_thread(
            self._client.fput_object,
            self.bucket,
            key,
            str(path),
            content_type=_content_type(key, content_type),
            part_size=self._part_bytes,
        )
        return await self.stat(key)

    async def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        await self._ready()
        try:
            obj = await asyncio.to_thread(self._client.stat_object, self.bucket, key)
        except S3Error as exc:
            _raise_if_missing(exc, key)
            raise
        return _info(key, obj)

    async def get_stream(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        check_key(key)
        await self._ready()
        if end is not None and end < start:
            await self.stat(key)  # nothing to send, but a missing key is still NotFound
            return
        length = 0 if end is None else end - start + 1  # minio reads to the end for 0
        try:
            # One response for the whole range, so an overwrite mid-read cannot mix versions.
            response = await asyncio.to_thread(
                self._client.get_object, self.bucket, key, offset=start, length=length
            )
        except S3Error as exc:
            _raise_if_missing(exc, key)
            if exc.code == "InvalidRange":  # start at or past the end, as the fs store: no bytes
                return
            raise
        try:
            while chunk := await asyncio.to_thread(response.read, chunk_size):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def download_file(self, key: str, path: Path) -> None:
        check_key(key)
        await self._ready()
        try:
            await asyncio.to_thread(self._client.fget_object, self.bucket, key, str(path))
        except S3Error as exc:
            _raise_if_missing(exc, key)
            raise

    async def read_url(self, key: str, *, expires_seconds: int = 600) -> str | None:
        """A presigned GET URL (signed locally; the region is looked up once)."""
        check_key(key)
        await self._ready()
        url: str = await asyncio.to_thread(
            self._client.presigned_get_object,
            self.bucket,
            key,
            expires=timedelta(seconds=expires_seconds),
        )
        return url

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except NotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._ready()
        await asyncio.to_thread(self._client.remove_object, self.bucket, key)

    def _list(self, prefix: str) -> Iterator[Object]:
        return cast(
            Iterator[Object],
            self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True),
        )

    async def list(self, prefix: str) -> list[ObjectInfo]:
        await self._ready()

        def collect() -> list[ObjectInfo]:
            return [
                _info(obj.object_name, obj, guess_content_type(obj.object_name))
                for obj in self._list(prefix)
                if obj.object_name
            ]

        found = await asyncio.to_thread(collect)
        return sorted(found, key=lambda info: info.key)

    async def delete_prefix(self, prefix: str) -> int:
        await self._ready()

        def remove() -> int:
            listed = 0

            def names() -> Iterator[DeleteObject]:
                nonlocal listed
                for obj in self._list(prefix):
                    if obj.object_name:
                        listed += 1
                        yield DeleteObject(obj.object_name)

            # Batches of up to 1000 keys per request, listing page by page as it goes.
            errors = [*self._client.remove_objects(self.bucket, names())]
            if errors:
                first = errors[0]
                raise UpstreamUnavailable(
                    f"could not delete {len(errors)} objects under {prefix!r}: "
                    f"{first.name}: {first.code} {first.message}"
                )
            return listed

        return await asyncio.to_thread(remove)

    async def create_multipart(self, key: str) -> str:
        check_key(key)
        await self._ready()
        return await asyncio.to_thread(
            self._client._create_multipart_upload,
            self.bucket,
            key,
            {"Content-Type": guess_content_type(key)},
        )

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        """Store one part; it is held in memory, since S3 needs a part's length up front."""
        check_key(key)
        check_part_number(part_number)
        await self._ready()
        data = b"".join([chunk async for chunk in chunks])
        try:
            return await asyncio.to_thread(
                self._client._upload_part, self.bucket, key, data, None, upload_id, part_number
            )
        except S3Error as exc:
            _upload_errors(exc, key, upload_id)
            raise

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectInfo:
        check_key(key)
        check_parts(parts)
        await self._ready()
        try:
            await asyncio.to_thread(
                self._client._complete_multipart_upload,
                self.bucket,
                key,
                upload_id,
                [Part(number, etag) for number, etag in parts],
            )
        except S3Error as exc:
            _upload_errors(exc, key, upload_id)
            raise
        return await self.stat(key)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        check_key(key)
        await self._ready()
        try:
            await asyncio.to_thread(
                self._client._abort_multipart_upload, self.bucket, key, upload_id
            )
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise

    async def check(self) -> None:
        if not await asyncio.to_thread(self._client.bucket_exists, self.bucket):
            self._bucket_ready = False
            await self._ready()

    async def close(self) -> None:
        self._http.clear()
