"""Typed messages: jobs (discriminated by ``type``) and video events."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter


class TranscodeJob(BaseModel):
    """Turn a stored source into an HLS ladder."""

    type: Literal["transcode"] = "transcode"
    job_id: uuid.UUID
    video_id: uuid.UUID
    source_key: str
    # A new run of a ready video: the ready run keeps serving until this one is complete.
    retranscode: bool = False
    attempt: int = 1
    published_at: float = Field(default_factory=time.time)


class PurgeJob(BaseModel):
    """Delete every object of a deleted video, or (``prefix``) the objects of a replaced run."""

    type: Literal["purge"] = "purge"
    job_id: uuid.UUID
    video_id: uuid.UUID
    prefix: str | None = None
    # Epoch seconds before which the job waits in the retry queues: the replaced run's grace,
    # while viewers still play the playlists they were handed.
    not_before: float = 0.0
    attempt: int = 1
    published_at: float = Field(default_factory=time.time)


Job = Annotated[TranscodeJob | PurgeJob, Field(discriminator="type")]
JOB_ADAPTER: TypeAdapter[TranscodeJob | PurgeJob] = TypeAdapter(Job)

EventType = Literal[
    "video.uploaded", "video.progress", "video.ready", "video.failed", "video.deleted"
]


class VideoEvent(BaseModel):
    """Published on the ``video.events`` topic exchange; the routing key is ``type``.

    ``master_key`` (``video.ready``) is where the ready video's master playlist is stored; it
    names every variant playlist, which name the init and media segments, so it is all an edge
    needs to warm the video. Events published before it existed carry none.
    """

    type: EventType
    video_id: uuid.UUID
    state: str
    master_key: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time)
