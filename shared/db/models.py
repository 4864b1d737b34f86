"""ORM models. The videos table carries the state machine every service follows."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Role(enum.StrEnum):
    """What an account may do: uploaders manage their own videos, admins manage every video."""

    uploader = "uploader"
    admin = "admin"


class Privacy(enum.StrEnum):
    """Who sees a video: public (listed), unlisted (by link), private (owner and admins)."""

    public = "public"
    unlisted = "unlisted"
    private = "private"


class User(Base):
    """An account; ``name`` is also the channel name."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.uploader.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    """An API key ``vsp_<prefix>_<secret>``: the prefix finds the row, the secret is hashed."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    # SHA-256 of 32 random bytes: a slow password hash would add nothing but latency.
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class VideoState(enum.StrEnum):
    """uploading -> uploaded -> queued -> transcoding -> ready | failed; any -> deleted."""

    uploading = "uploading"
    uploaded = "uploaded"
    queued = "queued"
    transcoding = "transcoding"
    ready = "ready"
    failed = "failed"
    deleted = "deleted"


ALLOWED_TRANSITIONS: dict[VideoState, frozenset[VideoState]] = {
    VideoState.uploading: frozenset({VideoState.uploaded, VideoState.failed, VideoState.deleted}),
    VideoState.uploaded: frozenset({VideoState.queued, VideoState.failed, VideoState.deleted}),
    VideoState.queued: frozenset({VideoState.transcoding, VideoState.failed, VideoState.deleted}),
    VideoState.transcoding: frozenset(
        {
            VideoState.transcoding,
            VideoState.queued,
            VideoState.ready,
            VideoState.failed,
            VideoState.deleted,
        }
    ),
    VideoState.ready: frozenset({VideoState.deleted}),
    VideoState.failed: frozenset({VideoState.queued, VideoState.deleted}),
    VideoState.deleted: frozenset(),
}


class Video(Base):
    __tablename__ = "videos"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    state: Mapped[str] = mapped_column(String(16), index=True, default=VideoState.uploading.value)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    source_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    has_video: Mapped[bool] = mapped_column(Boolean, default=False)
    has_audio: Mapped[bool] = mapped_column(Boolean, default=False)
    master_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    poster_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # None only for videos made before accounts existed: only admins manage those.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), nullable=True, index=True
    )
    privacy: Mapped[str] = mapped_column(String(16), default=Privacy.public.value)
    # The id a streaming-gateway client knows the video by (its ``track_id``), when one is set.
    track_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True, index=True)

    renditions: Mapped[list[Rendition]] = relationship(
        back_populates="video", cascade="all, delete-orphan", order_by="Rendition.bandwidth.desc()"
    )


class Rendition(Base):
    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("video_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("videos.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8))
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bandwidth: Mapped[int] = mapped_column(Integer)
    average_bandwidth: Mapped[int] = mapped_column(Integer)
    codecs: Mapped[str] = mapped_column(String(128))
    frame_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    playlist_key: Mapped[str] = mapped_column(String(512))

    video: Mapped[Video] = relationship(back_populates="renditions")


class TranscodeJobRow(Base):
    """The outbox: written with the state change, published after commit by the relay."""

    __tablename__ = "transcode_jobs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("videos.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(32), default="transcode")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    worker_mode: Mapped[str | None] = mapped_column(String(8), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Why its last attempt failed (the video's public reason), until it succeeds.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class UploadState(enum.StrEnum):
    """A tus upload: active -> finalizing -> complete | failed.

    ``finalizing`` holds every byte but no video yet; it is retried until the video exists
    (``complete``) or the bytes are refused for good (``failed``, with the bytes deleted).
    """

    active = "active"
    finalizing = "finalizing"
    complete = "complete"
    failed = "failed"


class Upload(Base):
    """tus upload state."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id"), nullable=True, index=True
    )
    length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_metadata: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    storage_key: Mapped[str] = mapped_column(String(512))
    storage_upload_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    parts: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    # Bytes received but too few for a storage part yet, kept as an object of their own.
    tail_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    tail_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    is_partial: Mapped[bool] = mapped_column(Boolean, default=False)
    partials: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=UploadState.active.value)
    # Why a failed upload was refused.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The lock token of the one writer whose commits count (fencing: a writer that lost the
    # lock cannot move the row, whatever it still believes).
    writer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Storage part numbers are handed out once each, so two writers never store the same one.
    next_part: Mapped[int] = mapped_column(Integer, default=1)
    finalize_attempted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RedirectorConfig(Base):
    __tablename__ = "redirector_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cdn_host: Mapped[str] = mapped_column(String(253))
    ratio: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer, default=302)
    sticky: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Webhook(Base):
    """A URL an account wants told about its videos' events, with the secret that signs them.

    The secret is kept as is: it must be at hand to sign each delivery (shared.videos.webhooks).
    """

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    description: Mapped[str] = mapped_column(String(200), default="")
    secret: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class WebhookDelivery(Base):
    """The webhook outbox: one event for one webhook, written with the state change it tells
    of, sent and retried by the dispatcher until it succeeds or runs out of attempts."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    webhook_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhooks.id", ondelete="CASCADE")
    )
    event: Mapped[str] = mapped_column(String(32))
    # No foreign key: the event outlives a deleted video's row.
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookAttempt(Base):
    """One try of a delivery: what the receiver answered, or why there was no answer."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Caption(Base):
    """A video's captions in one language, stored as WebVTT under ``version``'s folder
    (``videos/<id>/captions/<language>/<version>/``): a new upload is a new version, so edges
    never serve an old segment under a new name."""

    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("video_id", "language"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("videos.id", ondelete="CASCADE")
    )
    language: Mapped[str] = mapped_column(String(35))  # a BCP 47 tag
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[str] = mapped_column(String(32))
    source_format: Mapped[str] = mapped_column(String(4))  # vtt or srt, as uploaded
    cue_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
