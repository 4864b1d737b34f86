"""Appending a PATCH body to an upload: storage parts of a fixed size plus a stored tail.

S3 refuses parts under 5 MiB (except the last), while tus clients send chunks of any size. So
bytes are cut into parts of ``part_bytes``; whatever is left at the end of a request that does not
finish the upload is stored as a small "tail" object and put in front of the next request's bytes.
``offset = sum(part sizes) + tail_bytes`` is committed only once those bytes are stored, so a crash
loses at most the request in flight and the client resumes from the committed offset.

A request writes as the upload's one writer: the token of its lock, claimed on the row. Each
part gets a number the row hands out once (``reserve_part``), so a writer that lost its lock and
still stores a part can neither replace nor unlink a part another writer committed, and every
commit checks the token as well as the offset. What such a writer stored without committing is
never listed: its tail is deleted when its commit is refused, and its parts are left out when the
multipart upload is completed (or aborted), which drops them.

The sha-256 of the upload follows the bytes as they are stored (``digest.DIGESTS``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.chunked_upload.digest import DIGESTS
from services.chunked_upload.lock import Writer
from services.chunked_upload.tus import Checksum
from shared.core.errors import ChecksumMismatch, Conflict, NotFound, PayloadTooLarge
from shared.db.models import Upload, UploadState
from shared.db.upload_repository import UploadRepository
from shared.runtime.lease import LeaseLost
from shared.runtime.resources import Resources
from shared.storage.base import MAX_PART_NUMBER, ObjectStore

log = logging.getLogger(__name__)

_PROGRESS_EVERY_SECONDS = 0.5


class BodyInterrupted(Exception):
    """The client stopped sending before the end of its body."""


def tails_prefix(upload_id: uuid.UUID) -> str:
    """Where an upload's tail objects are stored."""
    return f"uploads/{upload_id}/tails/"


def choose_part_bytes(configured: int, min_part_bytes: int, biggest: int) -> int:
    """A part size the store accepts that keeps the upload within S3's 10,000 part numbers.

    The parts fit in half of them: the other half is room for numbers that writers reserved
    and never committed (requests cut off mid-part, writers that lost their lock).
    """
    return max(configured, min_part_bytes, -(-biggest // (MAX_PART_NUMBER // 2)))


async def delete_stored(store: ObjectStore, upload: Upload) -> None:
    """Delete what an upload stored (parts, tails, its object unless a video's source now)."""
    if upload.storage_upload_id and upload.state != UploadState.complete:
        await store.abort_multipart(upload.storage_key, upload.storage_upload_id)
    await store.delete_prefix(f"uploads/{upload.id}/")
    if upload.state != UploadState.complete:
        await store.delete(upload.storage_key)


@dataclass
class AppendResult:
    offset: int
    complete: bool
    parts: list[dict[str, Any]]
    storage_upload_id: str | None
    interrupted: bool = False


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


class BodyAppender:
    """One PATCH body written after an upload's committed bytes.

    The buffer holds at most one part plus one incoming chunk: every full part is stored as soon
    as it is buffered.
    """

    def __init__(
        self,
        res: Resources,
        upload: Upload,
        *,
        writer: Writer,
        checksum: Checksum | None,
        limit_bytes: int,
        part_bytes: int,
        expiry: timedelta,
    ) -> None:
        self._store = res.need_store()
        self._db = res.need_db()
        self._upload = upload
        self._writer = writer
        self._checksum = checksum
        self._hasher: hashlib._Hash | None = checksum.hasher() if checksum else None
        self._limit_bytes = limit_bytes
        self._part_bytes = part_bytes
        self._expiry = expiry
        self._base = upload.offset
        self._offset = upload.offset
        self._parts: list[dict[str, Any]] = list(upload.parts or [])
        self._tail_key = upload.tail_key
        self._tail_bytes = upload.tail_bytes
        self._storage_upload_id = upload.storage_upload_id
        self._stale_tails: list[str] = []
        self._fresh_tail: str | None = None  # stored by this request, not committed yet
        self._buffer = bytearray()
        self._received = 0
        # The sha-256 of the first ``_hashed`` bytes of the upload, when this process has it.
        self._sha = None if upload.is_partial else DIGESTS.resume(upload.id, upload.offset)
        self._hashed = upload.offset

    @property
    def verifies_checksum(self) -> bool:
        """Whether the body must match an Upload-Checksum before any of it counts."""
        return self._hasher is not None

    async def load_tail(self) -> None:
        """Put the previous request's stored tail in front of this body's bytes."""
        if self._tail_key:
            try:
                self._buffer += await self._store.get_bytes(self._tail_key)
            except NotFound:  # another writer committed past it meanwhile and deleted it
                raise Conflict(f"upload {self._upload.id} moved on; HEAD for its offset") from None

    async def read(
        self, body: AsyncIterable[bytes], on_progress: Callable[[int], Awaitable[None]]
    ) -> None:
        """Take the body chunk by chunk, reporting the bytes received now and then."""
        last_progress = time.monotonic()
        async for chunk in body:
            if not chunk:
                continue
            await self._take(chunk)
            now = time.monotonic()
            if now - last_progress >= _PROGRESS_EVERY_SECONDS:
                last_progress = now
                await on_progress(self._base + self._received)

    async def finish(self, *, interrupted: bool) -> AppendResult:
        """Check the digest, store what is still buffered and commit the new offset."""
        self._check_digest()
        length = self._upload.length
        if length is not None and not interrupted and self._base + self._received == length:
            await self._store_last()
            await self._commit(
                length,
                state=UploadState.finalizing.value,
                finalize_attempted_at=datetime.now(UTC),
            )
            return self._result(complete=True, interrupted=False)
        if self._buffer:
            await self._store_tail()
        if self._stored_bytes() != self._offset:
            await self._commit(self._stored_bytes())
        return self._result(complete=False, interrupted=interrupted)

    def abort(self) -> AppendResult:
        """Keep nothing of a body cut off before its checksum could be verified."""
        log.info("upload %s: body with a checksum cut off; nothing kept", self._upload.id)
        return self._result(complete=False, interrupted=True)

    async def _take(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._limit_bytes:
            raise PayloadTooLarge(
                f"the body runs past the upload's length ({self._base + self._limit_bytes} bytes)",
                max_bytes=self._base + self._limit_bytes,
            )
        if self._hasher is not None:
            self._hasher.update(chunk)
        self._buffer += chunk
        while len(self._buffer) >= self._part_bytes:
            await self._flush_part(bytes(self._buffer[: self._part_bytes]))
            del self._buffer[: self._part_bytes]
            # Without a checksum to verify first, stored bytes count at once: a client cut
            # off mid-request resumes from here rather than from the request's start.
            if self._hasher is None:
                await self._commit(self._stored_bytes())

    def _check_digest(self) -> None:
        if self._checksum is None or self._hasher is None:
            return
        if self._hasher.digest() != self._checksum.digest:
            raise ChecksumMismatch(
                f"the body's {self._checksum.algorithm} does not match Upload-Checksum; "
                f"the offset stays at {self._offset}",
                headers={"Upload-Offset": str(self._offset)},
            )

    async def _flush_part(self, data: bytes) -> None:
        self._writer.check()
        upload = self._upload
        if self._storage_upload_id is None:
            storage_upload_id = await self._store.create_multipart(upload.storage_key)
            try:
                async with self._db.session() as session:
                    await UploadRepository(session).start_multipart(
                        upload.id, writer=self._writer.token, storage_upload_id=storage_upload_id
                    )
            except Conflict:
                await self._store.abort_multipart(upload.storage_key, storage_upload_id)
                raise
            self._storage_upload_id = storage_upload_id
        async with self._db.session() as session:
            number = await UploadRepository(session).reserve_part(
                upload.id, writer=self._writer.token
            )
        etag, _ = await asyncio.gather(
            self._store.upload_part(
                upload.storage_key, self._storage_upload_id, number, _single(data)
            ),
            self._hash(data, self._parts_bytes()),
        )
        self._parts.append({"number": number, "etag": etag, "size": len(data)})
        self._retire_tail()  # its bytes now live in a part

    async def _store_last(self) -> None:
        self._writer.check()
        if self._storage_upload_id is None and not self._buffer:
            # An empty upload: whoever writes this object writes the same nothing.
            await self._store.put_bytes(self._upload.storage_key, b"")
        elif self._buffer or not self._parts:
            await self._flush_part(bytes(self._buffer))
        self._buffer.clear()

    async def _store_tail(self) -> None:
        self._writer.check()
        tail_key = f"{tails_prefix(self._upload.id)}{uuid.uuid4().hex}"
        data = bytes(self._buffer)
        await asyncio.gather(
            self._store.put_bytes(tail_key, data), self._hash(data, self._parts_bytes())
        )
        self._retire_tail()
        self._tail_key, self._tail_bytes = tail_key, len(data)
        self._fresh_tail = tail_key

    async def _hash(self, data: bytes, position: int) -> None:
        """Add the bytes of ``data``, stored at ``position``, that the hash has not seen yet.

        The front of ``data`` may be a stored tail, hashed when it was stored.
        """
        if self._sha is None:
            return
        seen = self._hashed - position
        if seen < 0:  # never hash across a gap
            self._sha = None
        elif seen < len(data):
            self._hashed = position + len(data)
            await asyncio.to_thread(self._sha.update, memoryview(data)[seen:])

    def _retire_tail(self) -> None:
        # The old tail is deleted only after the commit that stops pointing at it.
        if self._tail_key:
            self._stale_tails.append(self._tail_key)
            self._tail_key, self._tail_bytes = None, 0

    def _parts_bytes(self) -> int:
        return sum(int(part["size"]) for part in self._parts)

    def _stored_bytes(self) -> int:
        return self._parts_bytes() + self._tail_bytes

    async def _commit(self, new_offset: int, **extra: Any) -> None:
        try:
            self._writer.check()
            async with self._db.session() as session:
                await UploadRepository(session).advance(
                    self._upload.id,
                    writer=self._writer.token,
                    expected_offset=self._offset,
                    offset=new_offset,
                    parts=self._parts,
                    tail_key=self._tail_key,
                    tail_bytes=self._tail_bytes,
                    expires_at=datetime.now(UTC) + self._expiry,
                    **extra,
                )
        except (Conflict, LeaseLost):
            # Not committed for sure (another writer owns the upload now): nobody lists the tail.
            if self._fresh_tail is not None:
                await self._store.delete(self._fresh_tail)
            raise
        self._offset = new_offset
        self._fresh_tail = None
        if self._sha is not None and self._hashed == new_offset:
            DIGESTS.keep(self._upload.id, new_offset, self._sha)
        for key in self._stale_tails:
            await self._store.delete(key)
        self._stale_tails.clear()

    def _result(self, *, complete: bool, interrupted: bool) -> AppendResult:
        return AppendResult(
            self._offset, complete, self._parts, self._storage_upload_id, interrupted
        )


async def append_body(
    res: Resources,
    upload: Upload,
    body: AsyncIterable[bytes],
    *,
    writer: Writer,
    checksum: Checksum | None,
    limit_bytes: int,
    part_bytes: int,
    expiry: timedelta,
    on_progress: Callable[[int], Awaitable[None]],
) -> AppendResult:
    """Store ``body`` after the upload's committed bytes as ``writer``; the new committed offset."""
    appender = BodyAppender(
        res,
        upload,
        writer=writer,
        checksum=checksum,
        limit_bytes=limit_bytes,
        part_bytes=part_bytes,
        expiry=expiry,
    )
    await appender.load_tail()
    try:
        await appender.read(body, on_progress)
    except BodyInterrupted:
        if appender.verifies_checksum:
            return appender.abort()
        return await appender.finish(interrupted=True)
    return await appender.finish(interrupted=False)
