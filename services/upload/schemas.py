"""Response bodies of the upload service."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel

from shared.db.models import Video


class VideoCreated(BaseModel):
    id: uuid.UUID
    state: str
    title: str
    description: str
    tags: list[str]
    filename: str | None
    size_bytes: int
    sha256: str | None
    duration_seconds: float | None
    width: int | None
    height: int | None
    created_at: datetime | None
    links: dict[str, str]

    @classmethod
    def from_video(cls, video: Video, links: dict[str, str]) -> VideoCreated:
        return cls(
            id=video.id,
            state=video.state,
            title=video.title,
            description=video.description,
            tags=list(video.tags or []),
            filename=video.filename,
            size_bytes=video.source_size or 0,
            sha256=video.source_sha256,
            duration_seconds=video.duration_seconds,
            width=video.width,
            height=video.height,
            created_at=video.created_at,
            links=links,
        )
