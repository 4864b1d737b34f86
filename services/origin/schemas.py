"""Origin request and response bodies."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from shared.db.models import Privacy
from shared.videos.metadata import TAGS_MAX


class Variant(BaseModel):
    name: str
    bitrate: int
    average_bitrate: int
    resolution: str | None
    url: str


class StreamResponse(BaseModel):
    """The streaming gateway's shape, plus the URL style and the absolute expiry."""

    master_url: str
    variants: list[Variant]
    expires_in: int
    mode: Literal["query", "token"]
    expires_at: int


class RefreshRequest(BaseModel):
    video_id: uuid.UUID
    mode: Literal["query", "token"] | None = None


class VideoEdit(BaseModel):
    """What an owner may change of a video; absent fields stay as they are."""

    title: str | None = None
    description: str | None = None
    # Bounded before the tags are looked at, as at upload.
    tags: list[str] | None = Field(default=None, max_length=TAGS_MAX)
    privacy: Privacy | None = None
