"""The end of a tus upload, a state machine: active -> finalizing -> complete | failed.

The request that stores the last byte commits the row as ``finalizing``: every byte is stored
but no video exists yet. Finalizing joins the parts into the object, takes the sha-256 (kept
while the bytes were stored, else read back once), probes the file, and commits the video, its
transcode job and ``complete`` in one transaction. Every step can run again, so when a process
dies or storage or the database fails half-way the row stays ``finalizing`` with all its bytes,
and the next attempt starts over: the next PATCH or HEAD of the upload, or the sweeper once the
last attempt is ``CHUNKED_UPLOAD_FINALIZE_RETRY_SECONDS`` old. Until then HEAD and PATCH answer
423 with ``Retry-After`` (tus clients retry it) rather than an offset that says the upload is
done. Bytes refused for good (not media, over the media limits, parts gone) end ``failed``:
they are deleted, and the row keeps the reason until it expires.

An attempt holds the upload's lock and claims the row with its token like any writer, and its
last commit checks that token, so two attempts never both make a video.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.chunked_upload.digest import DIGESTS
from services.chunked_upload.lock import Writer, upload_lock
from services.chunked_upload.parts import delete_stored, tails_prefix
from services.chunked_upload.settings import StallPoint, UploadLimits
from shared.core.errors import AppError, BadRequest, Gone, Locked, NotFound, NotMedia
from shared.core.streams import MeteredStream
from shared.core.tasks import cancel_and_wait
from shared.db.models import Upload, UploadState
from shared.db.upload_repository import UploadRepository
from shared.runtime.lease import LeaseLost
from shared.runtime.resources import Resources
from shared.storage.base import ObjectStore
from shared.videos import progress, quotas
from shared.videos.ingest import SourceMetadata, finalize_source, reject_progress
from shared.videos.metadata import OTHER_VALUE_MAX_CHARS, MetadataInput, check_text

log = logging.getLogger(__name__)

# How long a HEAD waits for the attempt it started before answering 423.
HEAD_WAIT_SECONDS = 2.0
_VIDEO_KEYS = ("title", "description", "tags", "filename", "privacy")


class _Unfinishable(Exception):
    """The stored bytes can never make the object (parts or partial uploads are gone)."""


def source_metadata(metadata: dict[str, str]) -> SourceMetadata:
    """Video metadata from tus Upload-Metadata (filename or name, title, description, tags,
    privacy).

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
        privacy=metadata.get("privacy", ""),
    ).checked()


def still_finalizing(upload_id: uuid.UUID) -> Locked:
    """The answer while an upload holds every byte but no video yet: retry shortly."""
    return Locked(
        f"upload {upload_id} holds every byte and is being made a video; retry shortly",
        headers={"Retry-After": "1"},
    )


async def finalize(res: Resources, limits: UploadLimits, upload: Upload, writer: Writer) -> Upload:
    """Finish a finalizing upload whose lock the caller holds as ``writer``; the row at the end.

    Refused bytes raise NotMedia (400) or Gone (410) and leave the upload failed; any other
    failure leaves it finalizing, with its bytes, and raises Locked (423) for a retry.
    """
    try:
        await _finish(res, limits, upload, writer)
    except NotMedia as exc:
        await _fail(res, upload, writer, exc.detail)
        raise
    except _Unfinishable as exc:
        await _fail(res, upload, writer, str(exc))
        if upload.video_id is not None:
            await reject_progress(res, upload.video_id, str(exc))
        raise Gone(str(exc)) from None
    except LeaseLost:
        raise
    except AppError as exc:
        if exc.status < 500:  # the request's own fault, or another writer took over
            raise
        log.warning("upload %s: finalizing failed for now, retried later: %s", upload.id, exc)
        raise still_finalizing(upload.id) from exc
    except Exception as exc:
        log.warning("upload %s: finalizing failed for now, retried later: %r", upload.id, exc)
        raise still_finalizing(upload.id) from exc
    upload.state = UploadState.complete.value
    DIGESTS.forget(upload.id)
    await quotas.release(res, upload.owner_id, quotas.tus_member(upload.id))
    log.info("upload %s complete (%d bytes)", upload.id, upload.offset)
    try:
        await res.need_store().delete_prefix(tails_prefix(upload.id))  # a stale writer's too
        await _discard_partials(res, upload)
    except Exception as exc:  # the video exists; the expiry sweep deletes what is left
        log.warning("upload %s: cleaning up after it failed: %r", upload.id, exc)
    return upload


async def _finish(res: Resources, limits: UploadLimits, upload: Upload, writer: Writer) -> None:
    async with res.need_db().session() as session:
        await UploadRepository(session).set_fields(
            upload.id, finalize_attempted_at=datetime.now(UTC)
        )
    await _stall(limits, "start", upload)
    writer.check()
    sha256 = await _assemble(res, upload)
    await _stall(limits, "assembled", upload)
    writer.check()
    expires_at = datetime.now(UTC) + limits.expiry

    async def complete(session: AsyncSession) -> None:
        await UploadRepository(session).settle(
            upload.id, writer=writer.token, state=UploadState.complete, expires_at=expires_at
        )

    if upload.is_partial:
        async with res.need_db().session() as session:
            await complete(session)
        return
    store = res.need_store()
    assert upload.video_id is not None  # every upload but a partial one becomes a video
    await finalize_source(
        res,
        video_id=upload.video_id,
        key=upload.storage_key,
        size=upload.offset,
        sha256=sha256 or await _sha256_of(store, upload),
        meta=source_metadata(upload.upload_metadata or {}),
        owner_id=upload.owner_id,
        keep_on_error=True,
        in_transaction=complete,
    )


async def _stall(limits: UploadLimits, step: StallPoint, upload: Upload) -> None:
    """CHUNKED_UPLOAD_FAULT_STALL_AT: hold finalizing here for a while, or until killed."""
    if limits.stall_at == step:
        log.warning("upload %s: finalizing stalls at %r (fault injection)", upload.id, step)
        if limits.stall_seconds is None:
            await asyncio.Future()
        else:
            await asyncio.sleep(limits.stall_seconds)


async def _has_object(store: ObjectStore, upload: Upload) -> bool:
    try:
        return (await store.stat(upload.storage_key)).size == upload.offset
    except NotFound:
        return False


async def _assemble(res: Resources, upload: Upload) -> str | None:
    """Make the upload's object from its parts (or partial uploads) unless an earlier attempt
    did; its sha-256 when known without reading it back."""
    store = res.need_store()
    if upload.partials is not None:
        return await _join(res, upload)
    if upload.storage_upload_id is not None and not await _has_object(store, upload):
        parts = [(int(p["number"]), str(p["etag"])) for p in upload.parts]
        try:
            await store.complete_multipart(upload.storage_key, upload.storage_upload_id, parts)
        except (NotFound, BadRequest) as exc:
            # Either an attempt that died completed it already, or the parts are gone.
            if not await _has_object(store, upload):
                raise _Unfinishable(f"upload {upload.id}: its parts are gone ({exc})") from None
    if not await _has_object(store, upload):
        raise _Unfinishable(f"upload {upload.id}: the stored object is not {upload.offset} bytes")
    return DIGESTS.hexdigest(upload.id, upload.offset)


async def _join(res: Resources, upload: Upload) -> str | None:
    """Concatenation: stream the partial uploads, in order, into the final upload's object."""
    store = res.need_store()
    if await _has_object(store, upload):
        return None
    try:
        async with res.need_db().session() as session:
            partials = await UploadRepository(session).get_many(_ids(upload.partials or []))
    except NotFound as exc:
        raise _Unfinishable(f"upload {upload.id}: {exc.detail}") from None

    async def chunks() -> AsyncIterator[bytes]:
        for partial in partials:
            async for chunk in store.get_stream(partial.storage_key):
                yield chunk

    joined = MeteredStream(chunks(), upload.offset)
    try:
        await store.put_stream(upload.storage_key, joined)
    except NotFound as exc:
        raise _Unfinishable(f"upload {upload.id}: a partial upload's bytes are gone") from exc
    if not await _has_object(store, upload):
        raise _Unfinishable(f"upload {upload.id}: the partial uploads do not hold its length")
    return joined.sha256_hex


async def _sha256_of(store: ObjectStore, upload: Upload) -> str:
    """Read the object back to hash it: its bytes reached another process (or one since gone)."""
    log.info("upload %s: sha-256 read back from storage", upload.id)
    digest = hashlib.sha256()
    async for chunk in store.get_stream(upload.storage_key):
        await asyncio.to_thread(digest.update, chunk)
    return digest.hexdigest()


async def _fail(res: Resources, upload: Upload, writer: Writer, reason: str) -> None:
    """Refused for good: the row says why, and everything the upload stored is deleted."""
    async with res.need_db().session() as session:
        await UploadRepository(session).settle(
            upload.id, writer=writer.token, state=UploadState.failed, error=reason
        )
    upload.state, upload.error = UploadState.failed.value, reason
    await delete_stored(res.need_store(), upload)
    DIGESTS.forget(upload.id)
    await quotas.release(res, upload.owner_id, quotas.tus_member(upload.id))
    await _discard_partials(res, upload)
    log.info("upload %s refused: %s", upload.id, reason)


def _ids(values: list[str]) -> list[uuid.UUID]:
    return [uuid.UUID(value) for value in values]


async def _discard_partials(res: Resources, upload: Upload) -> None:
    """A final upload that ended consumed its partial uploads."""
    if not upload.partials:
        return
    async with res.need_db().session() as session:
        partials = await UploadRepository(session).find_many(_ids(upload.partials))
    await discard(res, partials)


async def discard(res: Resources, uploads: list[Upload]) -> None:
    """Delete uploads with everything they stored (parts, tails, unfinished objects)."""
    store = res.need_store()
    for upload in uploads:
        await delete_stored(store, upload)
        DIGESTS.forget(upload.id)
        await quotas.release(res, upload.owner_id, quotas.tus_member(upload.id))
    async with res.need_db().session() as session:
        await UploadRepository(session).remove([u.id for u in uploads])
    if res.redis is not None:
        videos = [u.video_id for u in uploads if u.video_id is not None]
        if videos:
            await res.redis.delete(*[progress.progress_key(video_id) for video_id in videos])


async def finish_upload(res: Resources, limits: UploadLimits, upload_id: uuid.UUID) -> Upload:
    """Take the upload's lock and finalize it if it is still finalizing; the row at the end."""
    async with upload_lock(res.need_redis(), upload_id, limits.lock_ttl_seconds) as writer:
        async with res.need_db().session() as session:
            upload = await UploadRepository(session).claim(upload_id, writer.token)
        if upload.state != UploadState.finalizing:
            return upload
        return await finalize(res, limits, upload, writer)


# Attempts started by HEAD requests, one per upload in this process.
_attempts: dict[uuid.UUID, asyncio.Task[None]] = {}


async def _attempt(res: Resources, limits: UploadLimits, upload_id: uuid.UUID) -> None:
    try:
        await finish_upload(res, limits, upload_id)
    except Exception as exc:
        log.info("upload %s not finalized this time: %s", upload_id, exc)


async def settled(res: Resources, limits: UploadLimits, upload: Upload) -> Upload:
    """HEAD of a finalizing upload: an attempt is started (or joined) and awaited a little.

    Raises Locked (423) while the upload still has no video.
    """
    task = _attempts.get(upload.id)
    if task is None:
        task = asyncio.create_task(_attempt(res, limits, upload.id), name=f"tus-end-{upload.id}")
        _attempts[upload.id] = task
        task.add_done_callback(lambda _: _attempts.pop(upload.id, None))
    await asyncio.wait([task], timeout=HEAD_WAIT_SECONDS)
    async with res.need_db().session() as session:
        upload = await UploadRepository(session).get(upload.id)
    if upload.state == UploadState.finalizing:
        raise still_finalizing(upload.id)
    return upload


async def retry_stuck(res: Resources, limits: UploadLimits) -> int:
    """Finalize uploads whose last attempt is older than the retry age; how many completed."""
    before = datetime.now(UTC) - limits.finalize_retry
    async with res.need_db().session() as session:
        stuck = list(await UploadRepository(session).stuck_finalizing(before))
    finished = 0
    for upload in stuck:
        try:
            await finish_upload(res, limits, upload.id)
            finished += 1
        except Exception as exc:  # a writer holds it, refused for good, or failed again
            log.info("upload %s not finalized this time: %s", upload.id, exc)
    return finished


async def stop_attempts() -> None:
    """Cancel the attempts HEAD requests started (they are retried after a restart)."""
    await cancel_and_wait(*_attempts.values())
