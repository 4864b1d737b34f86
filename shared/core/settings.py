"""Settings base shared by every service.

Infrastructure URLs are unprefixed (``DATABASE_URL``, ``REDIS_URL``, ``AMQP_URL``, storage);
service knobs carry the service prefix. Only services build settings: ``shared`` takes values
as arguments and never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SIGNING_SECRET = "dev-only-signing-secret-change-me"


class BaseServiceSettings(BaseSettings):
    """Connection settings every process needs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/vsp"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    mq_prefix: str = Field(default="vsp", description="Name prefix of every exchange and queue")
    mq_retry_delays_seconds: tuple[int, ...] = (2, 8, 32)
    amqp_heartbeat_seconds: int = Field(default=30, ge=0, description="0 disables heartbeats")
    amqp_reconnect_seconds: float = Field(
        default=2, gt=0, description="Pause between attempts to reach a broker that went away"
    )
    amqp_publish_timeout_seconds: float = Field(
        default=5,
        gt=0,
        description="Longest wait for a publish and its confirm (the outbox retries it later), "
        "a new channel or a basic.get",
    )
    mq_delivery_limit: int = Field(
        default=5,
        ge=1,
        description="Deliveries of one job message that ended without an ack (its worker died, "
        "hung past the consumer timeout or was stopped) before it is dead-lettered",
    )
    outbox_retention_seconds: float = Field(
        default=7 * 86_400, gt=0, description="Sent outbox rows older than this are deleted"
    )

    # A restarted PostgreSQL or Redis costs the requests of that moment a retry, not a 500.
    database_pool_size: int = Field(
        default=10, ge=1, description="Connections kept per process; as many again on demand"
    )
    database_pool_timeout_seconds: float = Field(
        default=10, gt=0, description="Wait for a free connection before a 503"
    )
    database_pool_recycle_seconds: float = Field(
        default=1800, gt=0, description="A pooled connection older than this is replaced"
    )
    database_connect_timeout_seconds: float = Field(default=5, gt=0)
    redis_max_connections: int = Field(
        default=64,
        ge=2,
        description="Pool bound per process (one is the pub/sub subscriber); a command waits "
        "REDIS_POOL_TIMEOUT_SECONDS for a free one",
    )
    redis_pool_timeout_seconds: float = Field(default=5, gt=0)
    redis_connect_timeout_seconds: float = Field(default=2, gt=0)
    redis_socket_timeout_seconds: float = Field(
        default=5, gt=0, description="Longest wait for a command's answer"
    )
    redis_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a command after a connection error or timeout, with "
        "exponential backoff (jittered, at most 2 s apart)",
    )
    redis_health_check_interval_seconds: int = Field(
        default=10, ge=0, description="A connection idle this long is PINGed before use"
    )
    readiness_timeout_seconds: float = Field(
        default=2, gt=0, description="A /readyz check slower than this reports its dependency down"
    )
    busy_retry_after_seconds: int = Field(
        default=1,
        ge=0,
        description="Retry-After of a 503: a concurrency cap is full or a dependency is down",
    )
    events_max_streams: int = Field(
        default=1024, ge=1, description="Progress event streams (SSE) served at once per process"
    )
    events_queue_messages: int = Field(
        default=64,
        ge=1,
        description="Messages an event stream may fall behind by before it is closed",
    )

    storage_backend: Literal["fs", "s3"] = "fs"
    storage_root: Path = Path("var/objects")
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_bucket: str = "videos"
    s3_secure: bool = False
    s3_region: str | None = None

    # What one upload may hold, checked when it is stored and again before it is transcoded.
    media_max_duration_seconds: float = Field(default=4 * 3600, gt=0)
    media_max_width_pixels: int = Field(default=8192, gt=0)
    media_max_height_pixels: int = Field(default=8192, gt=0)
    media_max_frame_pixels: int = Field(
        default=8192 * 4320, gt=0, description="Width times height: 8K DCI, either way up"
    )
    media_max_frame_rate_fps: float = Field(default=120, gt=0)
    media_max_streams: int = Field(default=16, gt=0)

    signing_secret: str = DEV_SIGNING_SECRET
    signing_key_id: str = "k1"
    signing_previous_keys: dict[str, str] = Field(default_factory=dict)
    signing_max_ttl_seconds: int = Field(
        default=86_400,
        ge=60,
        description="Longest life of a signed URL or token (a TTL plus the video's length); "
        "a later exp is refused",
    )
    signing_accept_legacy: bool = Field(
        default=True,
        description="Also verify unversioned (gateway) signatures and tokens, within the same "
        "bound; turn off once SIGNING_MAX_TTL_SECONDS has passed since the upgrade",
    )

    public_origin_url: str | None = Field(
        default=None, description="Base URL viewers reach the origin at; default: the request's"
    )
    log_level: str = "INFO"
    log_json: bool = False
    fault_delay_seconds: float = Field(
        default=0, ge=0, le=60, description="Injected delay per request, for resilience tests"
    )
    fault_admin_token: str | None = Field(
        default=None, description="Enables PUT /admin/fault to change the delay at run time"
    )

    @field_validator("signing_secret")
    @classmethod
    def _secret_long_enough(cls, value: str) -> str:
        if len(value) < 16:
            raise ValueError("SIGNING_SECRET must be at least 16 characters")
        return value

    def model_post_init(self, __context: object) -> None:
        if self.environment == "production" and self.signing_secret == DEV_SIGNING_SECRET:
            raise ValueError("SIGNING_SECRET must be set to a real secret in production")

    @property
    def signing_keys(self) -> dict[str, str]:
        """All keys accepted for verification: the current one and those being retired."""
        return {**self.signing_previous_keys, self.signing_key_id: self.signing_secret}
