"""SQL for captions: a video's caption rows, one per language."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Caption


class CaptionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list(self, video_id: uuid.UUID) -> Sequence[Caption]:
        """The video's captions, by language."""
        rows = await self.session.scalars(
            select(Caption).where(Caption.video_id == video_id).order_by(Caption.language)
        )
        return rows.all()

    async def find(self, video_id: uuid.UUID, language: str) -> Caption | None:
        """The video's caption in ``language``, if any."""
        return await self.session.scalar(
            select(Caption).where(Caption.video_id == video_id, Caption.language == language)
        )

    async def count(self, video_id: uuid.UUID) -> int:
        """How many languages the video has captions in."""
        total = await self.session.scalar(
            select(func.count()).select_from(Caption).where(Caption.video_id == video_id)
        )
        return int(total or 0)

    async def put(self, video_id: uuid.UUID, language: str, **fields: Any) -> str | None:
        """Add or replace the video's caption in ``language``; the version it replaced."""
        caption = await self.find(video_id, language)
        if caption is None:
            self.session.add(Caption(video_id=video_id, language=language, **fields))
            await self.session.flush()
            return None
        replaced = caption.version
        for name, value in fields.items():
            setattr(caption, name, value)
        await self.session.flush()
        return replaced

    async def remove(self, video_id: uuid.UUID, language: str) -> str | None:
        """Delete the video's caption in ``language``; the version it had (None: none)."""
        version = await self.session.scalar(
            delete(Caption)
            .where(Caption.video_id == video_id, Caption.language == language)
            .returning(Caption.version)
        )
        return version
