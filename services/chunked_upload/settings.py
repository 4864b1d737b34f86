"""Resumable (tus) upload service settings."""

from __future__ import annotations

from pydantic import Field

from shared.core import ports
from shared.core.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    chunked_upload_port: int = ports.CHUNKED_UPLOAD
    chunked_upload_cors_allow_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins whose pages may upload from the browser (tus-js-client on any site)",
    )
    chunked_upload_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    chunked_upload_part_bytes: int = Field(
        default=8 * 1024**2, ge=1024, description="Storage part size; S3 raises it to 5 MiB"
    )
    chunked_upload_expiry_seconds: float = Field(
        default=24 * 3600, gt=0, description="Idle time after which an unfinished upload expires"
    )
    chunked_upload_sweep_interval_seconds: float = Field(default=60, gt=0)
    chunked_upload_lock_ttl_seconds: float = Field(
        default=10,
        gt=0,
        description="How long a writer's lock outlives a crashed writer; refreshed while writing",
    )
