"""Origin request and response bodies."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from services.origin.settings import AVAILABLE_BITRATES_MAX
from shared.db.models import Privacy
from shared.videos.metadata import TAGS_MAX

TRACK_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


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
    # The WebVTT scrubbing previews (sprite tiles), signed like the playlists; None without.
    thumbnails_url: str | None = None


class RefreshRequest(BaseModel):
    """Today's body (``video_id``) or the streaming gateway's (``track_id``, ``artist_id``)."""

    video_id: uuid.UUID | None = None
    track_id: str | None = Field(default=None, pattern=TRACK_ID_PATTERN)
    artist_id: str | None = Field(default=None, max_length=32)
    available_bitrates: list[int] | None = Field(default=None, max_length=AVAILABLE_BITRATES_MAX)
    mode: Literal["query", "token"] | None = None

    @model_validator(mode="after")
    def _names_a_video(self) -> RefreshRequest:
        if self.video_id is None and self.track_id is None:
            raise ValueError("video_id or track_id is required")
        return self

    @property
    def video(self) -> str:
        """The video asked for, in either body's field."""
        return str(self.video_id) if self.video_id is not None else str(self.track_id)


class VideoEdit(BaseModel):
    """What an owner may change of a video; absent fields stay as they are."""

    title: str | None = None
    description: str | None = None
    # Bounded before the tags are looked at, as at upload.
    tags: list[str] | None = Field(default=None, max_length=TAGS_MAX)
    privacy: Privacy | None = None
    # The id streaming-gateway clients ask for the video by (unique across videos).
    track_id: str | None = Field(default=None, pattern=TRACK_ID_PATTERN)
