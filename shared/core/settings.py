"""Settings base shared by every service.

Infrastructure URLs are unprefixed (``DATABASE_URL``, ``REDIS_URL``, ``AMQP_URL``, storage);
service knobs carry the service prefix. Only services build settings: ``shared`` takes values
as arguments and never reads the environment itself. In production every secret must be real:
``BaseServiceSettings.secret_problems`` names each one that is not (docs/DEPLOYMENT.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SIGNING_SECRET = "dev-only-signing-secret-change-me"
DEV_AUTH_TOKEN_SECRET = "dev-only-auth-token-secret-change-me"

MIN_SECRET_BYTES = 16
MIN_PRODUCTION_SECRET_BYTES = 32
# Passwords and keys that ship as defaults or examples: the development values of this suite
# and the images it runs (MinIO, RabbitMQ, Grafana, PostgreSQL).
PLACEHOLDER_SECRETS = frozenset(
    {
        "admin",
        "guest",
        "minioadmin",
        "password",
        "postgres",
        "secret",
        "vsp-postgres",
        "vsp-rabbitmq",
        "vsp-minio-secret",
    }
)
PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me", "dev-only")


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is a known default or example rather than a chosen secret."""
    lowered = value.lower()
    return lowered in PLACEHOLDER_SECRETS or any(mark in lowered for mark in PLACEHOLDER_MARKS)


def secret_problem(value: str, *, production: bool, default: str | None = None) -> str | None:
    """Why ``value`` cannot be a secret (completing "SETTING ..."), or None when it can.

    Everywhere a secret has at least MIN_SECRET_BYTES; in production at least
    MIN_PRODUCTION_SECRET_BYTES, and neither its setting's development default nor a placeholder.
    """
    if production and value == default:
        return "is the development default; set a real secret"
    if production and is_placeholder(value):
        return "is a placeholder; set a real secret"
    least = MIN_PRODUCTION_SECRET_BYTES if production else MIN_SECRET_BYTES
    size = len(value.encode())
    if size < least:
        where = " in production" if production else ""
        return f"is {size} bytes; at least {least}{where}"
    return None


def url_problem(url: str, *, amqp: bool = False) -> str | None:
    """Why the password ``url`` carries is not fit for production, or None.

    A URL without a password is accepted (trust or peer authentication on a private network),
    except AMQP's: its client then logs in as RabbitMQ's default guest.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return "has no password (the broker's default guest login)" if amqp else None
    problem = secret_problem(unquote(parts.password), production=True)
    return f"has a password that {problem}" if problem else None


class BaseServiceSettings(BaseSettings):
    """Connection settings every process needs."""

    # Secret values never appear in a validation error.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # Fields holding a secret, checked by ``_secrets_fit``; a service's class adds its own.
    # An optional one (default None) is checked when it is set: unset turns its feature off.
    secret_settings: ClassVar[tuple[str, ...]] = (
        "signing_secret",
        "auth_token_secret",
        "fault_admin_token",
    )
    # Infrastructure credentials, checked in production only (their servers set the rules
    # elsewhere): URLs whose password, when they carry one, must pass as a secret would.
    secret_url_settings: ClassVar[tuple[str, ...]] = ("database_url", "redis_url", "amqp_url")

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

    auth_token_secret: str = Field(
        default=DEV_AUTH_TOKEN_SECRET,
        description="HMAC key of the access tokens that POST /api/auth/token hands out",
    )
    auth_token_ttl_seconds: int = Field(
        default=3600, ge=60, le=86_400, description="Life of an access token"
    )
    # Counted in Redis, so every service that signs in (origin, chunked_upload) shares them.
    login_max_failures_per_name: int = Field(
        default=10, ge=1, description="Failed sign-ins of one account name per window"
    )
    login_max_failures_per_address: int = Field(
        default=10, ge=1, description="Failed sign-ins from one client address per window"
    )
    login_window_seconds: int = Field(
        default=900, ge=1, description="Window of the sign-in failure limits"
    )

    api_rate_limit_per_address: int = Field(
        default=1200,
        ge=0,
        description="Anonymous API requests (and those with a bad credential) a client address "
        "may make per API_RATE_LIMIT_WINDOW_SECONDS (0: no limit)",
    )
    api_rate_limit_per_account: int = Field(
        default=1200,
        ge=0,
        description="API requests an account (not an admin) may make per "
        "API_RATE_LIMIT_WINDOW_SECONDS, from any address (0: no limit)",
    )
    api_rate_limit_window_seconds: int = Field(default=60, ge=1, le=86_400)
    trusted_proxies: frozenset[str] = Field(
        default=frozenset({"127.0.0.1", "::1"}),
        max_length=64,
        description="Addresses of the reverse proxies in front of the services, whose "
        "X-Forwarded-For names the client (the nearest untrusted hop counts as the client)",
    )

    # Per account, admins included; checked by both upload services (shared.videos.quotas).
    quota_stored_bytes: int = Field(
        default=50 * 1024**3,
        ge=0,
        description="Bytes an account may store: its videos' sources and its uploads in "
        "progress (0: no limit)",
    )
    quota_concurrent_uploads: int = Field(
        default=4, ge=0, description="Uploads an account may have in progress at once (0: no limit)"
    )
    quota_uploads_per_day: int = Field(
        default=100, ge=0, description="Uploads an account may start per UTC day (0: no limit)"
    )

    public_origin_url: str | None = Field(
        default=None, description="Base URL viewers reach the origin at; default: the request's"
    )
    # Media is guarded by its signature, so any site may read it by default (shared.http.cors).
    cors_allowed_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Sites whose pages may read media (GET/HEAD, Range) across origins; "*" any',
    )
    log_level: str = "INFO"
    log_json: bool = False
    fault_delay_seconds: float = Field(
        default=0, ge=0, le=60, description="Injected delay per request, for resilience tests"
    )
    fault_admin_token: str | None = Field(
        default=None, description="Enables PUT /admin/fault to change the delay at run time"
    )

    @model_validator(mode="after")
    def _secrets_fit(self) -> BaseServiceSettings:
        problems = list(self.secret_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def secret_problems(self) -> Iterator[str]:
        """What is wrong with each secret setting, one line per setting."""
        production = self.environment == "production"
        for label, value, default in self._secrets():
            problem = secret_problem(value, production=production, default=default)
            if problem:
                yield f"{label} {problem}"
        if not production:
            return
        for name in self.secret_url_settings:
            problem = url_problem(getattr(self, name), amqp=name == "amqp_url")
            if problem:
                yield f"{name.upper()} {problem}"
        if self.storage_backend == "s3":
            default = type(self).model_fields["s3_secret_key"].default
            problem = secret_problem(self.s3_secret_key, production=True, default=default)
            if problem:
                yield f"S3_SECRET_KEY {problem}"
            if is_placeholder(self.s3_access_key):
                yield "S3_ACCESS_KEY is the object store's default user"

    def _secrets(self) -> Iterator[tuple[str, str, str | None]]:
        """(name, value, development default) of every secret in use."""
        fields = type(self).model_fields
        for name in self.secret_settings:
            value = getattr(self, name)
            if value is not None:
                yield name.upper(), value, fields[name].default
        for key_id, value in self.signing_previous_keys.items():
            yield f"SIGNING_PREVIOUS_KEYS[{key_id}]", value, None

    @property
    def signing_keys(self) -> dict[str, str]:
        """All keys accepted for verification: the current one and those being retired."""
        return {**self.signing_previous_keys, self.signing_key_id: self.signing_secret}
