"""Appending a PATCH body to an upload: storage parts of a fixed size plus a stored tail.

S3 refuses parts under 5 MiB (except the last), while tus clients send chunks of any size. So
bytes are cut into parts of ``part_bytes``; whatever is left at the end of a request that does not
finish the upload is stored as a small "tail" object and put in front of the next request's bytes.
``offset = sum(part sizes) + tail_bytes`` is committed only once those bytes are stored, so a crash
loses at most the request in flight and the client resumes from the committed offset.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
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


@dataclass
class _State:
    offset: int
    parts: list[dict[str, Any]]
    tail_key: str | None
    tail_bytes: int
    storage_upload_id: str | None
    stale_tails: list[str] = field(default_factory=list)


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
    store = res.need_store()
    db = res.need_db()
    state = _State(
        offset=upload.offset,
        parts=list(upload.parts or []),
        tail_key=upload.tail_key,
        tail_bytes=upload.tail_bytes,
        storage_upload_id=upload.storage_upload_id,
    )
    base = upload.offset
    length = upload.length
    hasher: Any = checksum.hasher() if checksum else None
    buffer = bytearray()
    if state.tail_key:
        buffer += await store.get_bytes(state.tail_key)
    received = 0
    interrupted = False
    last_progress = time.monotonic()

    def stored_bytes() -> int:
        return sum(int(part["size"]) for part in state.parts) + state.tail_bytes

    async def commit(new_offset: int, **extra: Any) -> None:
        async with db.session() as session:
            await UploadRepository(session).advance(
                upload.id,
                expected_offset=state.offset,
                offset=new_offset,
                parts=state.parts,
                tail_key=state.tail_key,
                tail_bytes=state.tail_bytes,
                storage_upload_id=state.storage_upload_id,
                expires_at=datetime.now(UTC) + expiry,
                **extra,
            )
        state.offset = new_offset
        for key in state.stale_tails:
            await store.delete(key)
        state.stale_tails.clear()

    async def flush_part(data: bytes) -> None:
        if state.storage_upload_id is None:
            state.storage_upload_id = await store.create_multipart(upload.storage_key)
            async with db.session() as session:
                await UploadRepository(session).set_fields(
                    upload.id, storage_upload_id=state.storage_upload_id
                )

        async def one() -> Any:
            yield data

        number = len(state.parts) + 1
        etag = await store.upload_part(upload.storage_key, state.storage_upload_id, number, one())
        state.parts.append({"number": number, "etag": etag, "size": len(data)})
        if state.tail_key:  # its bytes now live in a part
            state.stale_tails.append(state.tail_key)
            state.tail_key, state.tail_bytes = None, 0

    try:
        async for chunk in body:
            if not chunk:
                continue
            received += len(chunk)
            if received > limit_bytes:
                raise PayloadTooLarge(
                    f"the body runs past the upload's length ({base + limit_bytes} bytes)",
                    max_bytes=base + limit_bytes,
                )
            if hasher is not None:
                hasher.update(chunk)
            buffer += chunk
            while len(buffer) >= part_bytes:
                await flush_part(bytes(buffer[:part_bytes]))
                del buffer[:part_bytes]
                # Without a checksum to verify first, stored bytes count at once: a client cut
                # off mid-request resumes from here rather than from the request's start.
                if hasher is None:
                    await commit(stored_bytes())
            now = time.monotonic()
            if now - last_progress >= _PROGRESS_EVERY_SECONDS:
                last_progress = now
                await on_progress(base + received)
    except BodyInterrupted:
        if hasher is not None:
            log.info("upload %s: body with a checksum cut off; nothing kept", upload.id)
            return AppendResult(
                state.offset, False, state.parts, state.storage_upload_id, interrupted=True
            )
        interrupted = True

    if hasher is not None and hasher.digest() != checksum.digest:  # type: ignore[union-attr]
        raise ChecksumMismatch(
            f"the body's {checksum.algorithm} does not match Upload-Checksum; "  # type: ignore[union-attr]
            f"the offset stays at {state.offset}",
            headers={"Upload-Offset": str(state.offset)},
        )

    complete = length is not None and base + received == length and not interrupted
    if complete:
        if state.storage_upload_id is None:
            # Everything fits in one small object: no multipart upload needed.
            await store.put_bytes(upload.storage_key, bytes(buffer))
            if state.tail_key:
                state.stale_tails.append(state.tail_key)
                state.tail_key, state.tail_bytes = None, 0
        elif buffer or not state.parts:
            await flush_part(bytes(buffer))
        buffer.clear()
    elif buffer:
        tail_key = f"{tails_prefix(upload.id)}{uuid.uuid4().hex}"
        await store.put_bytes(tail_key, bytes(buffer))
        if state.tail_key:
            state.stale_tails.append(state.tail_key)
        state.tail_key, state.tail_bytes = tail_key, len(buffer)
    if complete:
        await commit(length or 0, state="complete")
    elif stored_bytes() != state.offset:
        await commit(stored_bytes())
    return AppendResult(state.offset, complete, state.parts, state.storage_upload_id, interrupted)
