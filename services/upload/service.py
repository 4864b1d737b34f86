"""Streamed upload use case: store the body as it arrives, verify it, hand it to finalize.

The size limit and the ``Content-Digest`` are checked inside the stream the store consumes, so a
body that is too big or does not match fails before the object is committed: the filesystem
store drops its temporary file, the S3 store aborts its multipart upload, and nothing is kept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field, replace

from services.upload.form import FormLimits, StreamingForm
from services.upload.settings import Settings
from shared.core.errors import AppError, BadRequest, Conflict, PayloadTooLarge
from shared.core.streams import MeteredStream
from shared.db.models import Video
from shared.db.repositories import VideoRepository
from shared.runtime.resources import Resources
from shared.videos import progress, quotas
from shared.videos.ingest import finalize_source, reject_progress, source_key
from shared.videos.metadata import MetadataInput

# Room for the multipart framing and text fields around the file.
FORM_OVERHEAD_BYTES = 1024 * 1024
_CLAIM_SECONDS = 24 * 3600


class UploadInterrupted(BadRequest):
    code = "upload_interrupted"


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    form: FormLimits
    progress_interval_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.upload_max_bytes,
            form=FormLimits(
                max_fields=settings.upload_form_max_fields,
                max_text_bytes=settings.upload_form_max_text_bytes,
            ),
            progress_interval_seconds=settings.upload_progress_interval_seconds,
        )


@dataclass(frozen=True)
class UploadRequest:
    video_id: uuid.UUID
    owner_id: uuid.UUID
    max_bytes: int
    expected_sha256: bytes | None
    metadata: MetadataInput
    declared_bytes: int | None = None
    form_boundary: bytes | None = None
    form_limits: FormLimits = field(default_factory=FormLimits)
    progress_interval_seconds: float = 0.5


def _claim_key(video_id: uuid.UUID) -> str:
    return f"vsp:video-claim:{video_id}"


async def claim_video_id(res: Resources, video_id: uuid.UUID) -> None:
    """Reserve a client-chosen id; Conflict if a video or an upload already has it."""
    redis = res.need_redis()
    if not await redis.set(_claim_key(video_id), 1, nx=True, ex=_CLAIM_SECONDS):
        raise Conflict(f"video {video_id} already exists or is being uploaded")
    async with res.need_db().session() as session:
        if await VideoRepository(session).find(video_id) is not None:
            raise Conflict(f"video {video_id} already exists")


async def release_video_id(res: Resources, video_id: uuid.UUID) -> None:
    """Free a claimed id whose upload was refused, so that nothing of it is kept."""
    await res.need_redis().delete(_claim_key(video_id))


async def _reporting(
    res: Resources, request: UploadRequest, raw: MeteredStream, source: AsyncIterable[bytes]
) -> AsyncIterator[bytes]:
    redis = res.need_redis()

    async def report() -> None:
        await progress.publish(
            redis,
            request.video_id,
            stage="uploading",
            bytes_received=raw.size,
            bytes_total=request.declared_bytes,
        )

    await report()
    last = time.monotonic()
    async for chunk in source:
        yield chunk
        now = time.monotonic()
        if now - last >= request.progress_interval_seconds:
            last = now
            await report()
    await report()


async def accept_upload(
    res: Resources, body: AsyncIterable[bytes], request: UploadRequest
) -> Video:
    """Take a slot of the owner's quotas, then store the upload within them.

    A body that runs past the owner's stored-bytes quota is that quota's 413 (its bytes are
    not kept); the slot is given back however the upload ends.
    """
    slot = await quotas.claim_stream(
        res, request.owner_id, request.video_id, request.declared_bytes
    )
    try:
        return await _store_upload(
            res, body, replace(request, max_bytes=slot.max_bytes(request.max_bytes))
        )
    except PayloadTooLarge:
        if slot.bounds(request.max_bytes):
            raise slot.too_large() from None
        raise
    finally:
        await quotas.release(res, slot.owner_id, slot.member)


async def _store_upload(
    res: Resources, body: AsyncIterable[bytes], request: UploadRequest
) -> Video:
    """Stream ``body`` (raw or a form) to storage, verify size and digest, then finalize."""
    store = res.need_store()
    key = source_key(request.video_id)
    form: StreamingForm | None = None
    if request.form_boundary is None:
        raw = MeteredStream(body, request.max_bytes, request.expected_sha256)
        content = raw
    else:
        raw = MeteredStream(body, request.max_bytes + FORM_OVERHEAD_BYTES, request.expected_sha256)
        form = StreamingForm(raw, request.form_boundary, request.metadata, request.form_limits)
        try:
            await form.open()
        except AppError as exc:
            await reject_progress(res, request.video_id, exc.detail)
            raise
        content = MeteredStream(form.file_chunks(), request.max_bytes)
    try:
        # The store batches small chunks into big writes itself, without copying them.
        await store.put_stream(key, _reporting(res, request, raw, content))
    except AppError as exc:
        await reject_progress(res, request.video_id, exc.detail)
        raise
    except BaseException:
        await reject_progress(res, request.video_id, "the upload was interrupted")
        raise
    return await finalize_source(
        res,
        video_id=request.video_id,
        key=key,
        size=content.size,
        sha256=content.sha256_hex,
        meta=form.meta if form is not None else request.metadata.checked(),
        owner_id=request.owner_id,
    )
