"""Origin settings (``ORIGIN_...``).

The streaming gateway the origin grew from read ``STREAMING_...`` names; those are accepted as
aliases of the settings they became, and its TTL bounds hold outside the test suite.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.core import ports
from shared.core.settings import BaseServiceSettings
from shared.http.targets import parse_networks

DEV_ADMIN_TOKEN = "dev-only-origin-admin-token"
# The gateway's bounds (seconds); the test suite signs shorter lives to watch URLs expire.
GATEWAY_TTL_BOUNDS = {
    "origin_playlist_ttl_seconds": (60, 3600),
    "origin_segment_ttl_seconds": (10, 600),
}
AVAILABLE_BITRATES_MAX = 32


def gateway_alias(name: str, *gateway_names: str) -> AliasChoices:
    """The environment names of a setting: its own, then the gateway's ``STREAMING_...`` ones."""
    return AliasChoices(name, *gateway_names)


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
    signing_secret: str = Field(
        default=BaseServiceSettings.model_fields["signing_secret"].default,
        validation_alias=gateway_alias("signing_secret", "streaming_signing_secret"),
    )
    public_origin_url: str | None = Field(
        default=None,
        validation_alias=gateway_alias("public_origin_url", "streaming_base_url"),
        description="Base URL viewers reach the origin at; default: the request's",
    )
    origin_playlist_ttl_seconds: int = Field(
        default=300,
        validation_alias=gateway_alias(
            "origin_playlist_ttl_seconds", "streaming_playlist_ttl_seconds"
        ),
        ge=1,
        le=3600,
        description="Signature life of master/variant URLs on top of the video's length",
    )
    origin_segment_ttl_seconds: int = Field(
        default=600,
        validation_alias=gateway_alias(
            "origin_segment_ttl_seconds", "streaming_segment_ttl_seconds"
        ),
        ge=1,
        le=86400,
        description="Signature life of segment URLs on top of the video's length",
    )
    origin_cdn_base_url: str | None = Field(
        default=None,
        validation_alias=gateway_alias(
            "origin_cdn_base_url", "streaming_cdn_base_url", "cdn_base_url"
        ),
        description="Base URL (without /origin) every stream, playlist and poster URL points "
        "at, e.g. the balancer",
    )
    # Comma-separated in the environment, as the gateway took it ("256000,160000,96000").
    origin_available_bitrates: Annotated[list[int] | None, NoDecode] = Field(
        default=None,
        validation_alias=gateway_alias("origin_available_bitrates", "streaming_available_bitrates"),
        max_length=AVAILABLE_BITRATES_MAX,
        description="Variant bitrates (BANDWIDTH) the stream API lists when a request names "
        "none; unset: every variant",
    )
    origin_stream_mode: Literal["query", "token"] = Field(
        default="query",
        description="Default URL style of the stream API: ?exp=&sig= or a path token",
    )
    origin_segment_max_age_seconds: int = Field(default=31_536_000, ge=0)
    origin_signed_playlist_max_age_seconds: int = Field(default=5, ge=0)
    origin_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request body (JSON edits, sign-in forms); larger ones are 413",
    )
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

    # Webhooks (docs/WEBHOOKS.md): what an account may register and how the origin's
    # dispatcher retries. Comma-separated CIDRs in the environment ("127.0.0.1/32,10.1.0.0/16").
    webhook_max_per_account: int = Field(default=10, ge=0, le=1000)
    webhook_allow_http: bool = Field(
        default=False, description="Accept http:// webhook URLs besides https:// (local use)"
    )
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        max_length=64,
        description="Networks webhooks may reach although private, loopback or reserved",
    )
    webhook_retry_delays_seconds: list[Annotated[float, Field(ge=0, le=7 * 86_400)]] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0],
        min_length=1,
        max_length=32,
        description="Wait before each retry (the last repeats), each within +-20% jitter",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=50, description="Attempts of one delivery before it is failed"
    )
    webhook_dispatch_interval_seconds: float = Field(
        default=1, gt=0, le=60, description="How often the dispatcher looks for due deliveries"
    )
    webhook_dispatch_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_retention_seconds: float = Field(
        default=30 * 86_400, gt=0, description="Finished deliveries older than this are deleted"
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _cidr_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            parse_networks([str(item) for item in value])
        return value

    # Captions (README "Captions"): the bound of one caption file, checked before its body is
    # read (a route bound of the origin's BodyLimit), and how many languages a video may have.
    origin_caption_max_bytes: int = Field(
        default=512 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest caption file"
    )
    origin_captions_max_per_video: int = Field(default=32, ge=1, le=500)

    # Posters (README "Posters and previews"): the bound of an uploaded poster, checked before
    # its body is read (a route bound of the origin's BodyLimit), and of its width and height.
    origin_poster_max_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest poster file"
    )
    origin_poster_max_side_pixels: int = Field(
        default=4096, ge=16, le=16384, description="Largest width and height of a poster"
    )

    @field_validator("origin_available_bitrates", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_bitrates(value) if value.strip() else None
        return value

    @model_validator(mode="after")
    def _ttls_within_gateway_bounds(self) -> Settings:
        if self.environment == "test":
            return self
        for name, (low, high) in GATEWAY_TTL_BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name.upper()} is {value}; it must be {low}..{high} seconds")
        return self

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


def parse_bitrates(text: str) -> list[int]:
    """``"256000,160000"`` as bitrates; ValueError for anything else or more than the bound."""
    items = [item.strip() for item in text.split(",")]
    if len(items) > AVAILABLE_BITRATES_MAX:
        raise ValueError(f"at most {AVAILABLE_BITRATES_MAX} bitrates")
    if not all(item.isdigit() for item in items):
        raise ValueError(f"bitrates are comma-separated integers: {text!r}")
    return [int(item) for item in items]
