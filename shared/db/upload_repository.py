"""SQL for tus upload state."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.core.errors import Conflict, NotFound
from shared.db.models import Upload


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

    async def get_many(self, upload_ids: Sequence[uuid.UUID]) -> list[Upload]:
        """The uploads in the order asked; NotFound naming the first missing one."""
        rows = await self.session.scalars(select(Upload).where(Upload.id.in_(upload_ids)))
        found = {row.id: row for row in rows}
        for upload_id in upload_ids:
            if upload_id not in found:
                raise NotFound(f"upload {upload_id} does not exist")
        return [found[upload_id] for upload_id in upload_ids]

    async def advance(self, upload_id: uuid.UUID, *, expected_offset: int, **fields: Any) -> None:
        """Update the upload only if its offset is still ``expected_offset``, else Conflict."""
        result = await self.session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.offset == expected_offset)
            .values(**fields)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise Conflict(f"upload {upload_id} moved on while this request wrote to it")

    async def set_fields(self, upload_id: uuid.UUID, **fields: Any) -> None:
        """Update columns without loading the row."""
        await self.session.execute(update(Upload).where(Upload.id == upload_id).values(**fields))

    async def expired(self, now: datetime, *, limit: int = 100) -> Sequence[Upload]:
        """Uploads past their expiry, locked so that concurrent sweepers skip them."""
        rows = await self.session.scalars(
            select(Upload)
            .where(Upload.expires_at < now)
            .order_by(Upload.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return rows.all()

    async def remove(self, upload_ids: Sequence[uuid.UUID]) -> None:
        """Delete upload rows."""
        if upload_ids:
            await self.session.execute(delete(Upload).where(Upload.id.in_(upload_ids)))
