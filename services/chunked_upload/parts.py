"""Appending a PATCH body to an upload: storage parts of a fixed size plus a stored tail.

S3 refuses parts under 5 MiB (except the last), while tus clients send chunks of any size. So
bytes are cut into parts of ``part_bytes``; whatever is left at the end of a request that does not
finish the upload is stored as a small "tail" object and put in front of the next request's bytes.
``offset = sum(part sizes) + tail_bytes`` is committed only once those bytes are stored, so a crash
loses at most the request in flight and the client resumes from the committed offset.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.chunked_upload.tus import Checksum
from shared.core.errors import ChecksumMismatch, PayloadTooLarge
from shared.db.models import Upload
from shared.db.upload_repository import UploadRepository
from shared.runtime.resources import Resources
from shared.storage.base import MAX_PART_NUMBER

log = logging.getLogger(__name__)

_PROGRESS_EVERY_SECONDS = 0.5


class BodyInterrupted(Exception):
    """The client stopped sending before the end of its body."""


def tails_prefix(upload_id: uuid.UUID) -> str:
    """Where an upload's tail objects are stored."""
    return f"uploads/{upload_id}/tails/"


def choose_part_bytes(configured: int, min_part_bytes: int, biggest: int) -> int:
    """A part size the store accepts that keeps the upload within S3's 10,000 parts."""
    return max(configured, min_part_bytes, -(-biggest // (MAX_PART_NUMBER - 1)))


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
        checksum: Checksum | None,
        limit_bytes: int,
        part_bytes: int,
        expiry: timedelta,
    ) -> None:
        self._store = res.need_store()
        self._db = res.need_db()
        self._upload = upload
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
        self._buffer = bytearray()
        self._received = 0

    @property
    def verifies_checksum(self) -> bool:
        """Whether the body must match an Upload-Checksum before any of it counts."""
        return self._hasher is not None

    async def load_tail(self) -> None:
        """Put the previous request's stored tail in front of this body's bytes."""
        if self._tail_key:
            self._buffer += await self._store.get_bytes(self._tail_key)

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
            await self._commit(length, state="complete")
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
        upload = self._upload
        if self._storage_upload_id is None:
            self._storage_upload_id = await self._store.create_multipart(upload.storage_key)
            async with self._db.session() as session:
                await UploadRepository(session).set_fields(
                    upload.id, storage_upload_id=self._storage_upload_id
                )
        number = len(self._parts) + 1
        etag = await self._store.upload_part(
            upload.storage_key, self._storage_upload_id, number, _single(data)
        )
        self._parts.append({"number": number, "etag": etag, "size": len(data)})
        self._retire_tail()  # its bytes now live in a part

    async def _store_last(self) -> None:
        if self._storage_upload_id is None:
            # Everything fits in one small object: no multipart upload needed.
            await self._store.put_bytes(self._upload.storage_key, bytes(self._buffer))
            self._retire_tail()
        elif self._buffer or not self._parts:
            await self._flush_part(bytes(self._buffer))
        self._buffer.clear()

    async def _store_tail(self) -> None:
        tail_key = f"{tails_prefix(self._upload.id)}{uuid.uuid4().hex}"
        await self._store.put_bytes(tail_key, bytes(self._buffer))
        self._retire_tail()
        self._tail_key, self._tail_bytes = tail_key, len(self._buffer)

    def _retire_tail(self) -> None:
        # The old tail is deleted only after the commit that stops pointing at it.
        if self._tail_key:
            self._stale_tails.append(self._tail_key)
            self._tail_key, self._tail_bytes = None, 0

    def _stored_bytes(self) -> int:
        return sum(int(part["size"]) for part in self._parts) + self._tail_bytes

    async def _commit(self, new_offset: int, **extra: Any) -> None:
        async with self._db.session() as session:
            await UploadRepository(session).advance(
                self._upload.id,
                expected_offset=self._offset,
                offset=new_offset,
                parts=self._parts,
                tail_key=self._tail_key,
                tail_bytes=self._tail_bytes,
                storage_upload_id=self._storage_upload_id,
                expires_at=datetime.now(UTC) + self._expiry,
                **extra,
            )
        self._offset = new_offset
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
    checksum: Checksum | None,
    limit_bytes: int,
    part_bytes: int,
    expiry: timedelta,
    on_progress: Callable[[int], Awaitable[None]],
) -> AppendResult:
    """Store ``body`` after the upload's committed bytes; returns the new committed offset."""
    appender = BodyAppender(
        res,
        upload,
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
