"""tus use cases: create, append, terminate, concatenate, expire; finished uploads are finalized.

Every upload belongs to the account that created it: only that account or an admin may read,
append to, terminate or concatenate it (403 otherwise). A (non-partial) upload is told the id
of the video it becomes when it is created (``Video-Id``), so its progress is visible at
``/api/videos/{id}/events`` from the first byte; the two ids are drawn independently, so a
video's public id never reveals the upload's URL. How an upload that holds every byte becomes a
video, and why HEAD answers 423 meanwhile, is ``finalize``'s story.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime

from services.chunked_upload import finalize
from services.chunked_upload.finalize import discard, source_metadata
from services.chunked_upload.lock import Writer, upload_lock
from services.chunked_upload.parts import append_body, choose_part_bytes
from services.chunked_upload.settings import UploadLimits
from services.chunked_upload.tus import Checksum, Concat
from shared.core.errors import BadRequest, Conflict, Forbidden, Gone, Locked, PayloadTooLarge
from shared.db.models import Upload, UploadState
from shared.db.upload_repository import UploadRepository
from shared.http.auth import Principal, may_manage
from shared.runtime.resources import Resources
from shared.videos import progress, quotas
from shared.videos.ingest import reject_progress, source_key

log = logging.getLogger(__name__)

ACTIVE, FINALIZING = UploadState.active, UploadState.finalizing
COMPLETE, FAILED = UploadState.complete, UploadState.failed


def is_expired(upload: Upload, now: datetime | None = None) -> bool:
    return upload.state == ACTIVE and upload.expires_at < (now or datetime.now(UTC))


def _check_usable(upload: Upload) -> None:
    """410 for an upload that expired unfinished or whose bytes were refused."""
    if is_expired(upload):
        raise Gone(f"upload {upload.id} expired at {upload.expires_at.isoformat()}")
    if upload.state == FAILED:
        raise Gone(f"upload {upload.id} was refused: {upload.error}")


async def get_upload(res: Resources, upload_id: uuid.UUID) -> Upload:
    """The upload as it is; 404 when unknown, 410 once expired or refused."""
    async with res.need_db().session() as session:
        upload = await UploadRepository(session).get(upload_id)
    _check_usable(upload)
    return upload


def _check_owner(upload: Upload, principal: Principal) -> None:
    if not may_manage(principal, upload.owner_id):
        raise Forbidden(f"upload {upload.id} belongs to another account")


async def owned_upload(res: Resources, upload_id: uuid.UUID, principal: Principal) -> Upload:
    """The upload if ``principal`` may use it: 404 when unknown, 403 for another's upload.

    Checked before the upload's lock is taken, so a stranger never fences off its writer.
    """
    async with res.need_db().session() as session:
        upload = await UploadRepository(session).get(upload_id)
    _check_owner(upload, principal)
    return upload


async def head_upload(
    res: Resources, limits: UploadLimits, upload_id: uuid.UUID, principal: Principal
) -> Upload:
    """The upload for HEAD; 423 while it holds every byte but is no video yet."""
    upload = await owned_upload(res, upload_id, principal)
    _check_usable(upload)
    if upload.state == FINALIZING:
        upload = await finalize.settled(res, limits, upload)
        _check_usable(upload)
    return upload


async def _publish(res: Resources, upload: Upload, received: int) -> None:
    if upload.video_id is None or res.redis is None:
        return
    await progress.publish(
        res.redis,
        upload.video_id,
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
    owner: Principal,
) -> Upload:
    """Record ``owner``'s new upload (creation extension); nothing is stored until bytes arrive."""
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
    video_id = None if partial else uuid.uuid4()
    expires_at = datetime.now(UTC) + limits.expiry
    # Last, once every other check passed: an upload refused for its quotas records nothing.
    slot = await quotas.claim(
        res,
        owner.user_id,
        quotas.tus_member(upload_id),
        lapses_at=expires_at,
        needs_bytes=length,
    )
    try:
        async with res.need_db().session() as session:
            upload = UploadRepository(session).add(
                id=upload_id,
                video_id=video_id,
                owner_id=owner.user_id,
                length=length,
                offset=0,
                upload_metadata=metadata,
                expires_at=expires_at,
                storage_key=source_key(video_id) if video_id else f"uploads/{upload_id}/data",
                parts=[],
                tail_bytes=0,
                is_partial=partial,
                state=ACTIVE.value,
            )
    except BaseException:
        await quotas.release(res, slot.owner_id, slot.member)
        raise
    await _publish(res, upload, 0)
    log.info("upload %s created (%s bytes%s)", upload_id, length, ", partial" if partial else "")
    return upload


@contextlib.asynccontextmanager
async def _writer_lock(
    res: Resources, upload_id: uuid.UUID, limits: UploadLimits
) -> AsyncIterator[Writer]:
    """The upload's lock; while the sweeper removes an expired upload, a PATCH hears 410 or 404."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            writer = await stack.enter_async_context(
                upload_lock(res.need_redis(), upload_id, limits.lock_ttl_seconds)
            )
        except Locked:
            await get_upload(res, upload_id)
            raise
        yield writer


async def append(
    res: Resources,
    limits: UploadLimits,
    upload_id: uuid.UUID,
    *,
    offset: int,
    body: AsyncIterable[bytes],
    checksum: Checksum | None,
    owner: Principal,
    length: int | None = None,
    declared_bytes: int | None = None,
) -> Upload:
    """Write a PATCH body at ``offset`` as the upload's one writer; finalize once it is whole."""
    await owned_upload(res, upload_id, owner)
    async with _writer_lock(res, upload_id, limits) as writer:
        async with res.need_db().session() as session:
            upload = await UploadRepository(session).claim(upload_id, writer.token)
            _check_usable(upload)
            if upload.partials is not None:
                raise Forbidden("a final upload is assembled from its partial uploads; no PATCH")
        # A declared length is held against the owner's quota from the start; a deferred one
        # may grow only into what the owner may still store.
        room = None if upload.length is not None else await _room(res, upload)
        if length is not None and upload.length is None:
            _declare_length(upload, length, limits)
            if room is not None:
                await _refuse_over_room(res, upload, room, length - upload.offset)
            room = None
            async with res.need_db().session() as session:
                await UploadRepository(session).set_fields(upload_id, length=length)
        elif length is not None:
            _declare_length(upload, length, limits)
        if offset != upload.offset:
            raise Conflict(
                f"Upload-Offset {offset} does not match the upload's offset {upload.offset}",
                headers={"Upload-Offset": str(upload.offset)},
            )
        if upload.state == FINALIZING:  # an earlier attempt was cut short: this PATCH retries
            return await finalize.finalize(res, limits, upload, writer)
        if upload.state != ACTIVE:
            return upload  # already complete: an empty PATCH at the end changes nothing
        biggest = upload.length if upload.length is not None else limits.max_bytes
        if declared_bytes is not None and declared_bytes > biggest - upload.offset:
            raise PayloadTooLarge(
                f"a body of {declared_bytes} bytes at offset {upload.offset} runs past the "
                f"upload's {biggest} bytes",
                max_bytes=biggest,
            )
        left = biggest - upload.offset
        if room is not None and declared_bytes is not None:
            await _refuse_over_room(res, upload, room, declared_bytes)
        try:
            result = await append_body(
                res,
                upload,
                body,
                writer=writer,
                checksum=checksum,
                limit_bytes=left if room is None else room.max_bytes(left),
                part_bytes=choose_part_bytes(
                    limits.part_bytes, res.need_store().min_part_bytes, biggest
                ),
                expiry=limits.expiry,
                on_progress=lambda received: _publish(res, upload, received),
            )
        except PayloadTooLarge:
            if room is not None and room.bounds(left):
                await _discard_over_quota(res, upload, room)
            raise
        await quotas.extend(
            res, upload.owner_id, quotas.tus_member(upload.id), datetime.now(UTC) + limits.expiry
        )
        upload.offset = result.offset
        upload.parts, upload.storage_upload_id = result.parts, result.storage_upload_id
        await _publish(res, upload, result.offset)
        if result.complete:
            upload.state = FINALIZING.value
            return await finalize.finalize(res, limits, upload, writer)
    return upload


async def _room(res: Resources, upload: Upload) -> quotas.Slot | None:
    """What the owner of a deferred-length upload may still store; None without a limit."""
    if upload.owner_id is None:
        return None
    room = await quotas.room(res, upload.owner_id)
    return room if room.room is not None else None


async def _refuse_over_room(res: Resources, upload: Upload, room: quotas.Slot, bytes_: int) -> None:
    """Refuse ``bytes_`` more for an upload if they do not fit in its owner's quota."""
    if room.room is not None and bytes_ > room.room:
        await _discard_over_quota(res, upload, room)


async def _discard_over_quota(res: Resources, upload: Upload, room: quotas.Slot) -> None:
    """An upload that cannot fit in its owner's quota is removed with its bytes; then the 413.

    It could never finish, and a refused upload keeps nothing.
    """
    refusal = room.too_large()
    async with res.need_db().session() as session:
        current = await UploadRepository(session).get(upload.id)
    await discard(res, [current])
    if upload.video_id is not None:
        await reject_progress(res, upload.video_id, refusal.detail)
    raise refusal


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


async def terminate(
    res: Resources, limits: UploadLimits, upload_id: uuid.UUID, owner: Principal
) -> None:
    """Termination extension: drop the upload and its stored bytes (a finished video stays)."""
    await owned_upload(res, upload_id, owner)
    async with upload_lock(res.need_redis(), upload_id, limits.lock_ttl_seconds) as writer:
        async with res.need_db().session() as session:
            # Claimed, so that a writer that lost the lock cannot commit to it any more.
            upload = await UploadRepository(session).claim(upload_id, writer.token)
        await discard(res, [upload])
    log.info("upload %s terminated", upload_id)


async def concatenate(
    res: Resources,
    limits: UploadLimits,
    partial_ids: list[uuid.UUID],
    metadata: dict[str, str],
    owner: Principal,
) -> Upload:
    """Concatenation extension: join finished partial uploads, in order, into a new video.

    Every partial upload must be ``owner``'s (or ``owner`` an admin). Asking again for the same
    partial uploads (a client that did not hear the answer) goes on with the final upload made
    of them the first time.
    """
    source_metadata(metadata)
    names = [str(partial_id) for partial_id in partial_ids]
    async with res.need_db().session() as session:
        repo = UploadRepository(session)
        upload = await repo.find_final(names)
        partials = [] if upload is not None else await repo.get_many(partial_ids)
    for owned in [upload] if upload is not None else partials:
        _check_owner(owned, owner)
    if upload is None:
        upload = await _new_final(res, limits, partials, names, metadata, owner)
    _check_usable(upload)
    if upload.state == FINALIZING:
        upload = await finalize.finish_upload(res, limits, upload.id)
        _check_usable(upload)
    return upload


async def _new_final(
    res: Resources,
    limits: UploadLimits,
    partials: list[Upload],
    names: list[str],
    metadata: dict[str, str],
    owner: Principal,
) -> Upload:
    """The row of a final upload: finalizing from the start, since its bytes are all stored.

    It belongs to the owner of its partial uploads (an admin joining them keeps it theirs).
    """
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
    upload_id, video_id = uuid.uuid4(), uuid.uuid4()
    owners = {partial.owner_id for partial in partials}
    async with res.need_db().session() as session:
        upload = UploadRepository(session).add(
            id=upload_id,
            video_id=video_id,
            owner_id=owners.pop() if len(owners) == 1 else owner.user_id,
            length=total,
            offset=total,
            upload_metadata=metadata,
            expires_at=datetime.now(UTC) + limits.expiry,
            storage_key=source_key(video_id),
            parts=[],
            tail_bytes=0,
            partials=names,
            state=FINALIZING.value,
            finalize_attempted_at=datetime.now(UTC),
        )
    await _publish(res, upload, total)
    log.info("upload %s joins %d partial uploads (%d bytes)", upload_id, len(partials), total)
    return upload


async def sweep_expired(res: Resources, limits: UploadLimits) -> int:
    """Delete expired unfinished uploads with their parts; forget old finished ones.

    An upload being finalized never expires: its bytes are a video in the making.
    """
    now = datetime.now(UTC)
    removed = 0
    async with res.need_db().session() as session:
        expired = list(await UploadRepository(session).expired(now))
    for candidate in expired:
        try:
            async with upload_lock(
                res.need_redis(), candidate.id, limits.lock_ttl_seconds
            ) as writer:
                async with res.need_db().session() as session:
                    upload = await UploadRepository(session).claim(candidate.id, writer.token)
                if upload.state == FINALIZING or upload.expires_at >= now:
                    continue  # written to since it was listed
                await _sweep(res, upload)
            removed += 1
        except Exception as exc:  # a writer holds it (it is no longer idle) or storage failed
            log.info("upload %s not swept this time: %s", candidate.id, exc)
    if removed:
        log.info("swept %d expired upload(s)", removed)
    return removed


async def _sweep(res: Resources, upload: Upload) -> None:
    if upload.state == COMPLETE and not upload.is_partial:
        # The bytes are a video's source now; only the tus record goes.
        async with res.need_db().session() as session:
            await UploadRepository(session).remove([upload.id])
        return
    await discard(res, [upload])
    if upload.state == ACTIVE and upload.video_id is not None:
        await reject_progress(res, upload.video_id, "the upload expired unfinished")
