"""SQL for tus upload state."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, cast, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from shared.core.errors import Conflict, NotFound
from shared.db.models import Upload, UploadState


def _moved_on(upload_id: uuid.UUID) -> Conflict:
    return Conflict(f"upload {upload_id} moved on while this request wrote to it")


class UploadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, **fields: Any) -> Upload:
        """Stage a new upload row."""
        upload = Upload(**fields)
        self.session.add(upload)
        return upload

    async def get(self, upload_id: uuid.UUID) -> Upload:
        """The upload; NotFound when there is none."""
        upload = await self.session.get(Upload, upload_id, populate_existing=True)
        if upload is None:
            raise NotFound(f"upload {upload_id} does not exist")
        return upload

    async def find_many(self, upload_ids: Sequence[uuid.UUID]) -> list[Upload]:
        """Those of the uploads that exist."""
        rows = await self.session.scalars(select(Upload).where(Upload.id.in_(upload_ids)))
        return list(rows)

    async def get_many(self, upload_ids: Sequence[uuid.UUID]) -> list[Upload]:
        """The uploads in the order asked; NotFound naming the first missing one."""
        found = {row.id: row for row in await self.find_many(upload_ids)}
        for upload_id in upload_ids:
            if upload_id not in found:
                raise NotFound(f"upload {upload_id} does not exist")
        return [found[upload_id] for upload_id in upload_ids]

    async def claim(self, upload_id: uuid.UUID, writer: str) -> Upload:
        """Make ``writer`` the one writer whose commits count; the upload as it is now."""
        upload = await self.session.scalar(
            update(Upload)
            .where(Upload.id == upload_id)
            .values(writer=writer)
            .returning(Upload)
            .execution_options(populate_existing=True)
        )
        if upload is None:
            raise NotFound(f"upload {upload_id} does not exist")
        return upload

    async def _fenced(self, upload_id: uuid.UUID, writer: str, *where: Any, **fields: Any) -> None:
        result = await self.session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.writer == writer, *where)
            .values(**fields)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise _moved_on(upload_id)

    async def advance(
        self, upload_id: uuid.UUID, *, writer: str, expected_offset: int, **fields: Any
    ) -> None:
        """Move an active upload on from ``expected_offset``, if ``writer`` still owns it."""
        await self._fenced(
            upload_id,
            writer,
            Upload.offset == expected_offset,
            Upload.state == UploadState.active.value,
            **fields,
        )

    async def start_multipart(
        self, upload_id: uuid.UUID, *, writer: str, storage_upload_id: str
    ) -> None:
        """Record the upload's multipart upload, unless another one is recorded already."""
        await self._fenced(
            upload_id,
            writer,
            Upload.storage_upload_id.is_(None),
            storage_upload_id=storage_upload_id,
        )

    async def reserve_part(self, upload_id: uuid.UUID, *, writer: str) -> int:
        """A storage part number nobody has used for this upload, if ``writer`` owns it."""
        number = await self.session.scalar(
            update(Upload)
            .where(Upload.id == upload_id, Upload.writer == writer)
            .values(next_part=Upload.next_part + 1)
            .returning(Upload.next_part - 1)
        )
        if number is None:
            raise _moved_on(upload_id)
        return int(number)

    async def settle(
        self, upload_id: uuid.UUID, *, writer: str, state: UploadState, **fields: Any
    ) -> None:
        """Move a finalizing upload to ``state``, if ``writer`` still owns it."""
        await self._fenced(
            upload_id,
            writer,
            Upload.state == UploadState.finalizing.value,
            state=state.value,
            **fields,
        )

    async def set_fields(self, upload_id: uuid.UUID, **fields: Any) -> None:
        """Update columns without loading the row."""
        await self.session.execute(update(Upload).where(Upload.id == upload_id).values(**fields))

    async def find_final(self, partials: Sequence[str]) -> Upload | None:
        """The final upload already made of exactly these partial uploads, if any."""
        result = await self.session.scalars(
            select(Upload).where(Upload.partials == cast(list(partials), JSONB)).limit(1)
        )
        return result.first()

    async def expired(self, now: datetime, *, limit: int = 100) -> Sequence[Upload]:
        """Uploads past their expiry (never one being finalized), oldest first."""
        rows = await self.session.scalars(
            select(Upload)
            .where(Upload.expires_at < now, Upload.state != UploadState.finalizing.value)
            .order_by(Upload.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return rows.all()

    async def stuck_finalizing(self, before: datetime, *, limit: int = 100) -> Sequence[Upload]:
        """Finalizing uploads whose last attempt started before ``before``, oldest first."""
        rows = await self.session.scalars(
            select(Upload)
            .where(
                Upload.state == UploadState.finalizing.value,
                or_(
                    Upload.finalize_attempted_at.is_(None),
                    Upload.finalize_attempted_at < before,
                ),
            )
            .order_by(Upload.finalize_attempted_at)
            .limit(limit)
        )
        return rows.all()

    async def held_bytes(self, owner_id: uuid.UUID, now: datetime) -> int:
        """The bytes ``owner_id``'s uploads hold before they are videos.

        An unexpired active upload holds its declared length (its offset while deferred), a
        finalizing one its length, a finished partial upload its bytes until a final upload
        consumes it; a final upload holds nothing of its own (its partial uploads do).
        """
        held = or_(
            and_(Upload.state == UploadState.active.value, Upload.expires_at >= now),
            Upload.state == UploadState.finalizing.value,
            and_(Upload.state == UploadState.complete.value, Upload.is_partial),
        )
        total = await self.session.scalar(
            select(func.coalesce(func.sum(func.coalesce(Upload.length, Upload.offset)), 0)).where(
                Upload.owner_id == owner_id, Upload.partials.is_(None), held
            )
        )
        return int(total or 0)

    async def remove(self, upload_ids: Sequence[uuid.UUID]) -> None:
        """Delete upload rows."""
        if upload_ids:
            await self.session.execute(delete(Upload).where(Upload.id.in_(upload_ids)))
