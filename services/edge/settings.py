"""Edge settings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from shared.core import ports
from shared.core.settings import BaseServiceSettings

MIB = 1024 * 1024


class Settings(BaseServiceSettings):
    secret_settings: ClassVar[tuple[str, ...]] = (
        *BaseServiceSettings.secret_settings,
        "edge_admin_token",
    )

    edge_port: int = ports.EDGE
    edge_id: str | None = Field(default=None, description="Sent as X-Edge-Id; default edge-<port>")
    edge_origin_url: str = ports.local_url(ports.ORIGIN)
    edge_cache_dir: Path = Path("var/edge-cache")
    edge_cache_max_bytes: int = Field(default=2048 * MIB, ge=64 * 1024)
    edge_cache_max_object_bytes: int = Field(
        default=64 * MIB, ge=1, description="Bigger objects are relayed, not stored"
    )
    edge_memory_max_bytes: int = Field(default=256 * MIB, ge=0)
    edge_memory_max_object_bytes: int = Field(default=8 * MIB, ge=0)
    edge_max_ttl_seconds: int = Field(
        default=365 * 86400, ge=0, description="Upper bound on the origin's max-age"
    )
    edge_stale_if_error_seconds: int = Field(
        default=86400, ge=0, description="Used when the origin's Cache-Control names none"
    )
    edge_stale_while_revalidate_seconds: int = Field(
        default=0, ge=0, description="Used when the origin's Cache-Control names none"
    )
    edge_origin_timeout_seconds: float = Field(default=10, gt=0)
    edge_origin_connect_timeout_seconds: float = Field(default=2, gt=0)
    edge_origin_signature_ttl_seconds: int = Field(default=60, ge=5)
    edge_negative_ttl_seconds: float = Field(
        default=5,
        ge=0,
        le=300,
        description="How long an origin 404 is remembered per key; 0 asks the origin every time",
    )
    edge_negative_max_entries: int = Field(
        default=10_000, ge=0, description="Missing keys remembered at most (oldest dropped)"
    )
    edge_admin_token: str | None = Field(
        default=None, description="Bearer token of the purge API; unset disables it"
    )
    edge_prefetch_next_segment: bool = True
    edge_warm_on_ready: bool = False
    edge_events_queue_expires_seconds: int = Field(
        default=3600,
        ge=60,
        description="How long the broker keeps the edge's video events (deletions to purge) "
        "while the edge is away",
    )
    edge_warm_segments: int = Field(default=2, ge=0, le=50)
