"""Redirector settings: the fallback configuration and the knobs of one instance."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, field_validator

from services.redirector.schemas import STATUS_CODES, validate_host
from shared.core import ports
from shared.core.settings import BaseServiceSettings
from shared.http.auth import MIN_TOKEN_CHARS

DEV_ADMIN_TOKEN = "dev-only-redirector-admin-token"


class Settings(BaseServiceSettings):
    redirector_port: int = ports.REDIRECTOR
    redirector_instance_id: str = Field(default_factory=lambda: socket.gethostname())
    redirector_admin_token: str = DEV_ADMIN_TOKEN

    # Used when the table is empty or the database cannot be reached.
    redirector_cdn_host: str = "cdn.local"
    redirector_ratio: int = Field(default=5, ge=1)
    redirector_status_code: int = 302
    redirector_sticky: bool = False

    redirector_origin_hosts: tuple[str, ...] = Field(
        default=("*.origin-cluster",),
        description="Host patterns a video URL may name; '*.' matches any subdomain",
    )
    redirector_max_url_bytes: int = Field(default=2048, ge=64)
    redirector_permanent_max_age_seconds: int = Field(default=3600, ge=0)
    redirector_server: Literal["asyncio", "granian", "uvicorn"] = Field(
        default="asyncio",
        description="asyncio: the redirector's own uvloop + httptools server; or an ASGI server",
    )
    redirector_fast_path: bool = Field(
        default=True, description="Answer redirects in plain ASGI, before the framework"
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

    @field_validator("redirector_admin_token")
    @classmethod
    def _token_long_enough(cls, value: str) -> str:
        if len(value) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"REDIRECTOR_ADMIN_TOKEN must be at least {MIN_TOKEN_CHARS} characters"
            )
        return value

    def model_post_init(self, __context: object) -> None:
        super().model_post_init(__context)
        if self.environment == "production" and self.redirector_admin_token == DEV_ADMIN_TOKEN:
            raise ValueError("REDIRECTOR_ADMIN_TOKEN must be set to a real secret in production")
