"""tus use cases: create, append, terminate, concatenate, expire; finished uploads are finalized.

A (non-partial) upload's id is also the id of the video it becomes, so its progress is visible at
``/api/videos/{id}/events`` from the first byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.chunked_upload.lock import upload_lock
from services.chunked_upload.parts import append_body, choose_part_bytes, tails_prefix
from services.chunked_upload.settings import Settings
from services.chunked_upload.tus import (
    METADATA_MAX_BYTES,
    METADATA_MAX_PAIRS,
    Checksum,
    Concat,
)
from shared.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Locked,
    NotMedia,
    PayloadTooLarge,
)
from shared.db.models import Upload
from shared.db.upload_repository import UploadRepository
from shared.runtime.resources import Resources
from shared.videos import progress
from shared.videos.ingest import SourceMetadata, finalize_source, reject_progress, source_key
from shared.videos.metadata import OTHER_VALUE_MAX_CHARS, MetadataInput, check_text

log = logging.getLogger(__name__)

ACTIVE, COMPLETE = "active", "complete"


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    part_bytes: int
    expiry: timedelta
    lock_ttl_seconds: float
    metadata_max_bytes: int = METADATA_MAX_BYTES
    metadata_max_pairs: int = METADATA_MAX_PAIRS

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.chunked_upload_max_bytes,
            part_bytes=settings.chunked_upload_part_bytes,
            expiry=timedelta(seconds=settings.chunked_upload_expiry_seconds),
            lock_ttl_seconds=settings.chunked_upload_lock_ttl_seconds,
            metadata_max_bytes=settings.chunked_upload_metadata_max_bytes,
            metadata_max_pairs=settings.chunked_upload_metadata_max_pairs,
        )


_VIDEO_KEYS = ("title", "description", "tags", "filename")


def source_metadata(metadata: dict[str, str]) -> SourceMetadata:
    """Video metadata from tus Upload-Metadata (filename or name, title, description, tags).

    Every other value is kept with the upload (HEAD reports it), so it is checked too.
    """
    for key, value in metadata.items():
        if key not in _VIDEO_KEYS:
            check_text(f"Upload-Metadata {key}", value, OTHER_VALUE_MAX_CHARS)
    return MetadataInput(
        title=metadata.get("title", ""),
        description=metadata.get("description", ""),
        tags=metadata.get("tags", ""),
        filename=metadata.get("filename") or metadata.get("name") or "",
    ).checked()


def is_expired(upload: Upload, now: datetime | None = None) -> bool:
    return upload.state == ACTIVE and upload.expires_at < (now or datetime.now(UTC))


async def get_upload(res: Resources, upload_id: uuid.UUID) -> Upload:
    """The upload for HEAD; 404 when unknown, 410 once expired."""
    async with res.need_db().session() as session:
        upload = await UploadRepository(session).get(upload_id)
    if is_expired(upload):
        raise Gone(f"upload {upload_id} expired at {upload.expires_at.isoformat()}")
    return upload


async def _publish(res: Resources, upload: Upload, received: int) -> None:
    if upload.is_partial or res.redis is None:
        return
    await progress.publish(
        res.redis,
        upload.id,
        stage="uploading",
        bytes_received=received,
        bytes_total=upload.length,
    )


async def create_upload(
    res: Resources,
    limits: UploadLimits,
    *,
    length: int | None,
    defer_length: bool,
    metadata: dict[str, str],
    concat: Concat | None,
) -> Upload:
    """Record a new upload (creation extension); nothing is stored until bytes arrive."""
    if concat is not None and concat.kind == "final":
        raise BadRequest("use concatenate() for final uploads")
    if (length is None) == (not defer_length):
        raise BadRequest("send exactly one of Upload-Length and Upload-Defer-Length: 1")
    if length is not None and length > limits.max_bytes:
        raise PayloadTooLarge(
            f"Upload-Length {length} exceeds the maximum of {limits.max_bytes} bytes",
            max_bytes=limits.max_bytes,
        )
    source_metadata(metadata)  # refuse bad metadata now, not after the last byte
    upload_id = uuid.uuid4()
    partial = concat is not None and concat.kind == "partial"
    async with res.need_db().session() as session:
        upload = UploadRepository(session).add(
            id=upload_id,
            video_id=None if partial else upload_id,
            length=length,
            offset=0,
            upload_metadata=metadata,
            expires_at=datetime.now(UTC) + limits.expiry,
            storage_key=f"uploads/{upload_id}/data" if partial else source_key(upload_id),
            parts=[],
            tail_bytes=0,
            is_partial=partial,
            state=ACTIVE,
        )
    await _publish(res, upload, 0)
    log.info("upload %s created (%s bytes%s)", upload_id, length, ", partial" if partial else "")
    return upload


@contextlib.asynccontextmanager
async def _writer_lock(
    res: Resources, upload_id: uuid.UUID, limits: UploadLimits
) -> AsyncIterator[None]:
    """The upload's lock; while the sweeper removes an expired upload, a PATCH hears 410 or 404."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(
                upload_lock(res.need_redis(), upload_id, limits.lock_ttl_seconds)
            )
        except Locked:
            await get_upload(res, upload_id)
            raise
        yield


async def append(
    res: Resources,
    limits: UploadLimits,
    upload_id: uuid.UUID,
    *,
    offset: int,
    body: AsyncIterable[bytes],
    checksum: Checksum | None,
    length: int | None = None,
    declared_bytes: int | None = None,
) -> Upload:
    """Write a PATCH body at ``offset`` under the upload's lock; finalize once it is complete."""
    async with _writer_lock(res, upload_id, limits):
        async with res.need_db().session() as session:
            repo = UploadRepository(session)
            upload = await repo.get(upload_id)
            if is_expired(upload):
                raise Gone(f"upload {upload_id} expired at {upload.expires_at.isoformat()}")
            if upload.partials is not None:
                raise Forbidden("a final upload is assembled from its partial uploads; no PATCH")
            if length is not None:
                _declare_length(upload, length, limits)
                await repo.set_fields(upload_id, length=length)
        if offset != upload.offset:
            raise Conflict(
                f"Upload-Offset {offset} does not match the upload's offset {upload.offset}",
                headers={"Upload-Offset": str(upload.offset)},
            )
        if upload.state != ACTIVE:
            return upload  # already complete: an empty PATCH at the end changes nothing
        biggest = upload.length if upload.length is not None else limits.max_bytes
        if declared_bytes is not None and declared_bytes > biggest - upload.offset:
            raise PayloadTooLarge(
                f"a body of {declared_bytes} bytes at offset {upload.offset} runs past the "
                f"upload's {biggest} bytes",
                max_bytes=biggest,
            )
        result = await append_body(
            res,
            upload,
            body,
            checksum=checksum,
            limit_bytes=biggest - upload.offset,
            part_bytes=choose_part_bytes(
                limits.part_bytes, res.need_store().min_part_bytes, biggest
            ),
            expiry=limits.expiry,
            on_progress=lambda received: _publish(res, upload, received),
        )
        upload.offset = result.offset
        upload.parts, upload.storage_upload_id = result.parts, result.storage_upload_id
        await _publish(res, upload, result.offset)
        if result.complete:
            await _complete(res, upload)
    return upload


def _declare_length(upload: Upload, length: int, limits: UploadLimits) -> None:
    if upload.length is not None and upload.length != length:
        raise BadRequest(f"Upload-Length is already {upload.length}; it cannot change")
    if length < upload.offset:
        raise BadRequest(f"Upload-Length {length} is below the bytes already received")
    if length > limits.max_bytes:
        raise PayloadTooLarge(
            f"Upload-Length {length} exceeds the maximum of {limits.max_bytes} bytes",
            max_bytes=limits.max_bytes,
        )
    upload.length = length


async def _sha256_of(res: Resources, key: str) -> str:
    digest = hashlib.sha256()
    async for chunk in res.need_store().get_stream(key):
        digest.update(chunk)
    return digest.hexdigest()


async def _complete(res: Resources, upload: Upload) -> None:
    """Join the stored parts into the object; a non-partial upload then becomes a video."""
    store = res.need_store()
    if upload.storage_upload_id is not None:
        parts = [(int(p["number"]), str(p["etag"])) for p in upload.parts]
        await store.complete_multipart(upload.storage_key, upload.storage_upload_id, parts)
    await store.delete_prefix(tails_prefix(upload.id))
    stored = (await store.stat(upload.storage_key)).size
    if stored != upload.length:
        await store.delete(upload.storage_key)
        await discard(res, [upload])
        raise Conflict(f"upload {upload.id} stored {stored} bytes, not {upload.length}; dropped")
    if upload.is_partial:
        log.info("partial upload %s complete (%d bytes)", upload.id, upload.offset)
        return
    try:
        await finalize_source(
            res,
            video_id=upload.id,
            key=upload.storage_key,
            size=upload.offset,
            sha256=await _sha256_of(res, upload.storage_key),
            meta=source_metadata(upload.upload_metadata or {}),
        )
    except BaseException:
        await store.delete(upload.storage_key)
        await discard(res, [upload])
        raise


async def discard(res: Resources, uploads: list[Upload]) -> None:
    """Delete uploads with everything they stored (parts, tails, unfinished objects)."""
    store = res.need_store()
    for upload in uploads:
        if upload.storage_upload_id and upload.state == ACTIVE:
            await store.abort_multipart(upload.storage_key, upload.storage_upload_id)
        await store.delete_prefix(f"uploads/{upload.id}/")
    async with res.need_db().session() as session:
        await UploadRepository(session).remove([u.id for u in uploads])
    if res.redis is not None:
        await res.redis.delete(*[progress.progress_key(u.id) for u in uploads])


async def terminate(res: Resources, limits: UploadLimits, upload_id: uuid.UUID) -> None:
    """Termination extension: drop the upload and its stored bytes (a finished video stays)."""
    async with upload_lock(res.need_redis(), upload_id, limits.lock_ttl_seconds):
        async with res.need_db().session() as session:
            upload = await UploadRepository(session).get(upload_id)
        await discard(res, [upload])
    log.info("upload %s terminated", upload_id)


async def concatenate(
    res: Resources, limits: UploadLimits, partial_ids: list[uuid.UUID], metadata: dict[str, str]
) -> Upload:
    """Concatenation extension: join finished partial uploads, in order, into a new video."""
    meta = source_metadata(metadata)
    async with res.need_db().session() as session:
        partials = await UploadRepository(session).get_many(partial_ids)
    for partial in partials:
        if not partial.is_partial:
            raise BadRequest(f"upload {partial.id} is not a partial upload")
        if is_expired(partial):
            raise Gone(f"partial upload {partial.id} expired")
        if partial.state != COMPLETE:
            raise BadRequest(f"partial upload {partial.id} is not finished yet")
    total = sum(p.offset for p in partials)
    if total > limits.max_bytes:
        raise PayloadTooLarge(
            f"the partial uploads add up to {total} bytes, over the maximum of {limits.max_bytes}",
            max_bytes=limits.max_bytes,
        )
    upload_id = uuid.uuid4()
    key = source_key(upload_id)
    async with res.need_db().session() as session:
        upload = UploadRepository(session).add(
            id=upload_id,
            video_id=upload_id,
            length=total,
            offset=0,
            upload_metadata=metadata,
            expires_at=datetime.now(UTC) + limits.expiry,
            storage_key=key,
            parts=[],
            tail_bytes=0,
            partials=[str(p.id) for p in partials],
            state=ACTIVE,
        )
    await _publish(res, upload, 0)
    store = res.need_store()
    digest = hashlib.sha256()

    async def joined() -> AsyncIterator[bytes]:
        for partial in partials:
            async for chunk in store.get_stream(partial.storage_key):
                digest.update(chunk)
                yield chunk

    try:
        info = await store.put_stream(key, joined())
        if info.size != total:
            await store.delete(key)
            raise Conflict(f"the partial uploads hold {info.size} bytes, expected {total}")
        await finalize_source(
            res, video_id=upload_id, key=key, size=total, sha256=digest.hexdigest(), meta=meta
        )
    except NotMedia:
        await discard(res, [upload, *partials])
        raise
    except BaseException:
        await discard(res, [upload])
        await reject_progress(res, upload_id, "the partial uploads could not be joined")
        raise
    async with res.need_db().session() as session:
        await UploadRepository(session).set_fields(upload_id, offset=total, state=COMPLETE)
    upload.offset, upload.state = total, COMPLETE
    await discard(res, partials)
    log.info("upload %s joined from %d partial uploads (%d bytes)", upload_id, len(partials), total)
    return upload


async def sweep_expired(res: Resources, limits: UploadLimits) -> int:
    """Delete expired unfinished uploads with their parts; forget old finished ones."""
    now = datetime.now(UTC)
    removed = 0
    async with res.need_db().session() as session:
        expired = list(await UploadRepository(session).expired(now))
    for upload in expired:
        try:
            async with upload_lock(res.need_redis(), upload.id, limits.lock_ttl_seconds):
                if upload.state == COMPLETE and not upload.is_partial:
                    # The bytes are a video's source now; only the tus record goes.
                    async with res.need_db().session() as session:
                        await UploadRepository(session).remove([upload.id])
                else:
                    await discard(res, [upload])
                    if not upload.is_partial:
                        await reject_progress(res, upload.id, "the upload expired unfinished")
            removed += 1
        except Exception as exc:  # a writer holds it (it is no longer idle) or storage failed
            log.info("upload %s not swept this time: %s", upload.id, exc)
    if removed:
        log.info("swept %d expired upload(s)", removed)
    return removed
