"""Redirector settings: the fallback configuration and the knobs of one instance."""

from __future__ import annotations

import socket
from typing import ClassVar

from pydantic import Field, field_validator

from services.redirector.schemas import STATUS_CODES, CdnTarget, validate_host
from shared.core import ports
from shared.core.settings import BaseServiceSettings
from shared.http.h1_limits import Limits

DEV_ADMIN_TOKEN = "dev-only-redirector-admin-token"


class Settings(BaseServiceSettings):
    secret_settings: ClassVar[tuple[str, ...]] = (
        *BaseServiceSettings.secret_settings,
        "redirector_admin_token",
    )

    redirector_port: int = ports.REDIRECTOR
    redirector_instance_id: str = Field(default_factory=lambda: socket.gethostname())
    redirector_admin_token: str = DEV_ADMIN_TOKEN

    # Used when the table is empty or the database cannot be reached.
    redirector_cdn_host: str = "cdn.local"
    redirector_ratio: int = Field(default=5, ge=1)
    redirector_status_code: int = 302
    redirector_sticky: bool = False

    redirector_cdn_target: CdnTarget = Field(
        default="host",
        description=(
            "Where the CDN side points: 'host' the CDN host, 'edges' the video URL's path on the"
            " host the viewer asked (nginx routes /origin/ to the edges)"
        ),
    )

    redirector_origin_hosts: tuple[str, ...] = Field(
        default=("*.origin-cluster",),
        description="Host patterns a video URL may name; '*.' matches any subdomain",
    )
    redirector_max_url_bytes: int = Field(default=2048, ge=64)
    redirector_permanent_max_age_seconds: int = Field(default=3600, ge=0)
    redirector_fast_path: bool = Field(
        default=True, description="Answer redirects in the HTTP parser, before the framework"
    )
    redirector_max_request_line_bytes: int = Field(
        default=Limits.request_line_bytes, ge=256, description="Longest request target (414)"
    )
    redirector_max_headers: int = Field(default=Limits.header_count, ge=1)
    redirector_max_header_bytes: int = Field(
        default=Limits.header_bytes, ge=1024, description="Header names and values together (431)"
    )
    redirector_max_body_bytes: int = Field(default=Limits.body_bytes, ge=0)
    redirector_header_timeout_seconds: float = Field(
        default=Limits.header_timeout_seconds,
        gt=0,
        description="Time to send a request's head, then each part of its body (408)",
    )
    redirector_keep_alive_seconds: float = Field(default=Limits.keep_alive_seconds, gt=0)
    redirector_send_timeout_seconds: float = Field(
        default=Limits.send_timeout_seconds,
        gt=0,
        description="Time a client may leave an answer untaken before it is cut off",
    )
    redirector_reconnect_seconds: float = Field(default=1.0, gt=0)
    redirector_resync_seconds: float = Field(
        default=30.0, gt=0, description="Reload period, a safety net for missed notifications"
    )

    @field_validator("redirector_cdn_host")
    @classmethod
    def _cdn_host(cls, value: str) -> str:
        return validate_host(value)

    @field_validator("redirector_status_code")
    @classmethod
    def _status(cls, value: int) -> int:
        if value not in STATUS_CODES:
            raise ValueError(f"status code must be one of {sorted(STATUS_CODES)}")
        return value

    @property
    def http_limits(self) -> Limits:
        """The limits of the redirector's HTTP listener."""
        return Limits(
            request_line_bytes=self.redirector_max_request_line_bytes,
            header_count=self.redirector_max_headers,
            header_bytes=self.redirector_max_header_bytes,
            body_bytes=self.redirector_max_body_bytes,
            header_timeout_seconds=self.redirector_header_timeout_seconds,
            keep_alive_seconds=self.redirector_keep_alive_seconds,
            send_timeout_seconds=self.redirector_send_timeout_seconds,
        )
