"""Resumable (tus) upload service settings, and the limits the use cases take from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from services.chunked_upload.tus import METADATA_MAX_BYTES, METADATA_MAX_PAIRS
from shared.core import ports
from shared.core.settings import BaseServiceSettings

# Steps of finalizing at which CHUNKED_UPLOAD_FAULT_STALL_AT can hold it (fault tests).
StallPoint = Literal["start", "assembled"]


class Settings(BaseServiceSettings):
    chunked_upload_port: int = ports.CHUNKED_UPLOAD
    chunked_upload_cors_allow_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Origins whose pages may upload from the browser (tus-js-client on any site)",
    )
    chunked_upload_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    chunked_upload_max_concurrent_patches: int = Field(
        default=32,
        ge=1,
        description="PATCHes and creations with a body in progress at once per process; "
        "more get 503 with Retry-After",
    )
    chunked_upload_part_bytes: int = Field(
        default=8 * 1024**2, ge=1024, description="Storage part size; S3 raises it to 5 MiB"
    )
    chunked_upload_expiry_seconds: float = Field(
        default=24 * 3600, gt=0, description="Idle time after which an unfinished upload expires"
    )
    chunked_upload_sweep_interval_seconds: float = Field(
        default=15,
        gt=0,
        description="Period of the sweeper: expired uploads, and finalizing ones to retry",
    )
    chunked_upload_finalize_retry_seconds: float = Field(
        default=10,
        gt=0,
        description=(
            "How long after its last attempt the sweeper retries finalizing an upload that "
            "holds every byte but no video yet (a crash, a transient storage or database error)"
        ),
    )
    chunked_upload_fault_stall_at: StallPoint | None = Field(
        default=None,
        description=(
            "Fault tests only: the finalize step (start, assembled) at which finalizing stalls; "
            "refused in production"
        ),
    )
    chunked_upload_fault_stall_seconds: float | None = Field(
        default=None, gt=0, description="How long that stall lasts; unset: until the process dies"
    )
    chunked_upload_lock_ttl_seconds: float = Field(
        default=10,
        gt=0,
        description="How long a writer's lock outlives a crashed writer; refreshed while writing",
    )
    chunked_upload_metadata_max_bytes: int = Field(
        default=METADATA_MAX_BYTES,
        ge=1024,
        description="Upload-Metadata as sent (base64): room for a 5,000-character description",
    )
    chunked_upload_metadata_max_pairs: int = Field(default=METADATA_MAX_PAIRS, ge=5)
    chunked_upload_max_target_bytes: int = Field(
        default=4096, ge=1024, description="Request path and query string; more is a JSON 414"
    )
    chunked_upload_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=4096,
        description="Request header names and values together; more is a JSON 431",
    )
    chunked_upload_max_headers: int = Field(
        default=64, ge=16, description="Request headers; more is a JSON 431 (Granian stops at 100)"
    )
    chunked_upload_http1_buffer_bytes: int = Field(
        default=64 * 1024,
        description=(
            "Granian's HTTP/1.1 read buffer: a request line and headers that do not fit get "
            "Granian's own 431 before the app runs; also the largest body chunk the app receives"
        ),
    )
    chunked_upload_page_endpoints: list[str] = Field(
        default_factory=list,
        description=(
            "Absolute tus endpoints besides this service's own the upload page may send to "
            "when its address names one (?endpoint=)"
        ),
    )

    @field_validator("chunked_upload_page_endpoints")
    @classmethod
    def _absolute_http(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{endpoint!r} is not an absolute http(s) URL")
        return endpoints

    @model_validator(mode="after")
    def _no_faults_in_production(self) -> Settings:
        if self.environment == "production" and self.chunked_upload_fault_stall_at is not None:
            raise ValueError("CHUNKED_UPLOAD_FAULT_STALL_AT is for fault tests, not production")
        return self

    @model_validator(mode="after")
    def _headers_fit_the_buffer(self) -> Settings:
        # Below the server's own limit, so that an oversized header block hears a JSON 431.
        head = self.chunked_upload_max_target_bytes + self.chunked_upload_max_header_bytes
        if head + 8192 > self.chunked_upload_http1_buffer_bytes:
            raise ValueError(
                "CHUNKED_UPLOAD_HTTP1_BUFFER_BYTES must exceed CHUNKED_UPLOAD_MAX_TARGET_BYTES "
                "and CHUNKED_UPLOAD_MAX_HEADER_BYTES together by 8 KiB at least"
            )
        return self


@dataclass(frozen=True)
class UploadLimits:
    """What the tus use cases take from the settings."""

    max_bytes: int
    part_bytes: int
    expiry: timedelta
    lock_ttl_seconds: float
    metadata_max_bytes: int = METADATA_MAX_BYTES
    metadata_max_pairs: int = METADATA_MAX_PAIRS
    finalize_retry: timedelta = timedelta(seconds=10)
    stall_at: StallPoint | None = None
    stall_seconds: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.chunked_upload_max_bytes,
            part_bytes=settings.chunked_upload_part_bytes,
            expiry=timedelta(seconds=settings.chunked_upload_expiry_seconds),
            lock_ttl_seconds=settings.chunked_upload_lock_ttl_seconds,
            metadata_max_bytes=settings.chunked_upload_metadata_max_bytes,
            metadata_max_pairs=settings.chunked_upload_metadata_max_pairs,
            finalize_retry=timedelta(seconds=settings.chunked_upload_finalize_retry_seconds),
            stall_at=settings.chunked_upload_fault_stall_at,
            stall_seconds=settings.chunked_upload_fault_stall_seconds,
        )
