"""Origin settings (``ORIGIN_...``)."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from shared.core import ports
from shared.core.settings import BaseServiceSettings

DEV_ADMIN_TOKEN = "dev-only-origin-admin-token"


class Settings(BaseServiceSettings):
    secret_settings: ClassVar[tuple[str, ...]] = (
        *BaseServiceSettings.secret_settings,
        "origin_admin_token",
    )

    origin_port: int = ports.ORIGIN
    origin_server: Literal["granian", "uvicorn"] = Field(
        default="granian", description="HTTP server; Granian sends whole segments by path"
    )
    origin_runtime_threads: int = Field(default=1, ge=1, le=64)
    origin_playlist_ttl_seconds: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="Signature life of master/variant URLs on top of the video's length",
    )
    origin_segment_ttl_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="Signature life of segment URLs on top of the video's length",
    )
    origin_cdn_base_url: str | None = Field(
        default=None,
        description="Base URL (without /origin) stream URLs point at, e.g. the balancer",
    )
    origin_stream_mode: Literal["query", "token"] = Field(
        default="query",
        description="Default URL style of the stream API: ?exp=&sig= or a path token",
    )
    origin_segment_max_age_seconds: int = Field(default=31_536_000, ge=0)
    origin_signed_playlist_max_age_seconds: int = Field(default=5, ge=0)
    origin_token_playlist_max_age_seconds: int = Field(
        default=60, ge=0, description="Cache life of finished (ENDLIST) playlists in token mode"
    )
    origin_live_playlist_max_age_seconds: int = Field(
        default=2, ge=0, description="Cache life of playlists still growing (no ENDLIST yet)"
    )
    origin_cors_allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    origin_player_endpoints: list[str] = Field(
        default_factory=list,
        description="Base URLs the player page may also take from ?api= and ?media= (its own "
        "origin, ORIGIN_CDN_BASE_URL and PUBLIC_ORIGIN_URL always may)",
    )
    origin_catalog_page_max: int = Field(default=100, ge=1, le=1000)
    origin_admin_token: str = Field(
        default=DEV_ADMIN_TOKEN, description="Bearer token that deleting a video needs"
    )
    origin_upload_page_url: str | None = Field(
        default=None,
        description="The upload page the player and 'my videos' link to; default: port "
        f"{ports.CHUNKED_UPLOAD} of the host the page was loaded from",
    )

    @field_validator("origin_player_endpoints", "origin_upload_page_url")
    @classmethod
    def _absolute_http_urls(
        cls, value: list[str] | str | None, info: ValidationInfo
    ) -> list[str] | str | None:
        for url in [value] if isinstance(value, str) else value or []:
            parts = urlsplit(url)
            # ``port`` raises ValueError for a port out of range, refused like the rest.
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.port == 0:
                name = (info.field_name or "").upper()
                raise ValueError(f"{name} takes absolute http(s) URLs: {url!r}")
        return value
