"""Balancer settings: the backend pool, the score, tiers, failover and timeouts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from shared.core import ports
from shared.core.settings import BaseServiceSettings
from shared.http.h1_limits import Limits

Strategy = Literal["tiered", "round_robin", "least_connections"]


class BackendSpec(BaseModel):
    """One backend: where it listens and its share of traffic relative to the others."""

    url: str
    weight: float = Field(default=1.0, gt=0, le=100)
    name: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"backend URL must start with http:// or https://: {value!r}")
        return value.rstrip("/")

    @property
    def label(self) -> str:
        """The backend's name in stats, metrics and the X-Backend header."""
        return self.name or self.url.split("://", 1)[1]


class Settings(BaseServiceSettings):
    balancer_port: int = ports.BALANCER
    balancer_backends: list[BackendSpec] = Field(
        default_factory=lambda: [
            BackendSpec(url=ports.local_url(port), name=f"edge-{i}")
            for i, port in enumerate(ports.EDGES, start=1)
        ],
        min_length=1,
        description='JSON list of URLs or {"url", "weight", "name"} objects',
    )
    balancer_strategy: Strategy = "tiered"

    balancer_weight_cpu: float = Field(default=0.30, ge=0)
    balancer_weight_memory: float = Field(default=0.25, ge=0)
    balancer_weight_request_rate: float = Field(default=0.20, ge=0)
    balancer_weight_streams: float = Field(default=0.15, ge=0)
    balancer_weight_response_time: float = Field(default=0.10, ge=0)
    balancer_tier_thresholds: tuple[float, float, float] = (25, 50, 75)
    balancer_tier_hysteresis: float = Field(default=5, ge=0, le=25)

    # What counts as "full" (a component score of 100) for each measurement.
    balancer_cpu_full_percent: float = Field(default=100, gt=0)
    balancer_memory_full_bytes: int = Field(default=1024**3, gt=0)
    balancer_request_rate_full_per_second: float = Field(default=500, gt=0)
    balancer_streams_full: float = Field(default=100, gt=0)
    balancer_response_time_full_seconds: float = Field(default=0.5, gt=0)

    balancer_scrape_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    balancer_scrape_timeout_seconds: float = Field(default=2.0, gt=0)
    balancer_ewma_decay_seconds: float = Field(default=2.0, gt=0)
    balancer_max_attempts: int = Field(default=3, ge=1, le=10)
    balancer_eject_after_failures: int = Field(default=3, ge=1)
    balancer_health_interval_seconds: float = Field(default=1.0, gt=0)
    balancer_readmit_after_successes: int = Field(default=2, ge=1)
    balancer_slow_start_seconds: float = Field(default=10, ge=0)
    balancer_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    balancer_read_timeout_seconds: float = Field(default=30, gt=0)
    balancer_max_connections: int = Field(default=512, ge=1)
    balancer_history_seconds: int = Field(default=120, ge=10, le=3600)

    # The viewers' side of the listener.
    balancer_max_request_line_bytes: int = Field(
        default=Limits.request_line_bytes, ge=256, description="Longest request target (414)"
    )
    balancer_max_headers: int = Field(default=Limits.header_count, ge=1)
    balancer_max_header_bytes: int = Field(
        default=Limits.header_bytes, ge=1024, description="Header names and values together (431)"
    )
    balancer_max_body_bytes: int = Field(
        default=Limits.body_bytes, ge=0, description="Bodies go to the balancer's own paths only"
    )
    balancer_header_timeout_seconds: float = Field(
        default=Limits.header_timeout_seconds,
        gt=0,
        description="Time to send a request's head, then each part of its body (408)",
    )
    balancer_keep_alive_seconds: float = Field(default=Limits.keep_alive_seconds, gt=0)
    balancer_send_timeout_seconds: float = Field(
        default=Limits.send_timeout_seconds,
        gt=0,
        description="Time a client may leave an answer untaken before it is cut off",
    )

    @field_validator("balancer_backends", mode="before")
    @classmethod
    def _urls_or_objects(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("balancer_tier_thresholds")
    @classmethod
    def _ascending(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not 0 < value[0] < value[1] < value[2] < 100:
            raise ValueError("tier thresholds must rise strictly between 0 and 100")
        return value

    @model_validator(mode="after")
    def _distinct_backends(self) -> Settings:
        labels = [spec.label for spec in self.balancer_backends]
        if len(set(labels)) != len(labels):
            raise ValueError(f"backend names must be distinct: {labels}")
        weights = self.score_weights
        if sum(weights.values()) <= 0:
            raise ValueError("at least one score weight must be above zero")
        return self

    @property
    def http_limits(self) -> Limits:
        """The limits of the viewers' listener."""
        return Limits(
            request_line_bytes=self.balancer_max_request_line_bytes,
            header_count=self.balancer_max_headers,
            header_bytes=self.balancer_max_header_bytes,
            body_bytes=self.balancer_max_body_bytes,
            header_timeout_seconds=self.balancer_header_timeout_seconds,
            keep_alive_seconds=self.balancer_keep_alive_seconds,
            send_timeout_seconds=self.balancer_send_timeout_seconds,
        )

    @property
    def score_weights(self) -> dict[str, float]:
        """Weight of each score component."""
        return {
            "cpu": self.balancer_weight_cpu,
            "memory": self.balancer_weight_memory,
            "request_rate": self.balancer_weight_request_rate,
            "streams": self.balancer_weight_streams,
            "response_time": self.balancer_weight_response_time,
        }

    @property
    def full_scale(self) -> dict[str, float]:
        """The measurement that scores 100 for each component."""
        return {
            "cpu": self.balancer_cpu_full_percent,
            "memory": float(self.balancer_memory_full_bytes),
            "request_rate": self.balancer_request_rate_full_per_second,
            "streams": self.balancer_streams_full,
            "response_time": self.balancer_response_time_full_seconds,
        }
