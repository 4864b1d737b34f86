"""Origin request and response bodies."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel


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
