"""The redirect configuration and the shapes the config endpoints accept and return."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STATUS_CODES = frozenset({301, 302, 303, 307, 308})
PERMANENT = frozenset({301, 308})
# Where the CDN side points: the configured CDN host (an external CDN), or the suite's own edges
# behind the host the viewer asked (a path-absolute Location that nginx routes to the edges).
CdnTarget = Literal["host", "edges"]

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*(?::(?P<port>[0-9]{{1,5}}))?$")


def validate_host(value: str) -> str:
    """A lower-cased host name with an optional port, or ValueError."""
    host = value.strip().lower()
    match = _HOST.fullmatch(host)
    if match is None or len(host.split(":")[0]) > 253:
        raise ValueError("must be a host name such as cdn.example.com (optionally with :port)")
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError("port must be between 1 and 65535")
    return host


@dataclass(frozen=True)
class RedirectConfig:
    """What every instance needs to answer a redirect; ``version`` 0 means from the environment."""

    cdn_host: str
    ratio: int
    status_code: int = 302
    sticky: bool = False
    version: int = 0
    source: Literal["database", "environment"] = "environment"


class ConfigUpdate(BaseModel):
    """A change to the configuration; fields left out keep their current value."""

    model_config = ConfigDict(extra="forbid")

    cdn_host: str | None = None
    ratio: int | None = Field(default=None, ge=1, le=1_000_000)
    status_code: Literal[301, 302, 303, 307, 308] | None = None
    sticky: bool | None = None

    @field_validator("cdn_host")
    @classmethod
    def _cdn_host(cls, value: str | None) -> str | None:
        return None if value is None else validate_host(value)


class ConfigView(BaseModel):
    """The configuration an instance is answering with right now."""

    cdn_host: str
    ratio: int
    status_code: int
    sticky: bool
    version: int
    source: Literal["database", "environment"]
    cdn_target: CdnTarget = Field(
        description="REDIRECTOR_CDN_TARGET: 'edges' sends the CDN side to this host's edges"
    )
    instance: str
    applied_at: float = Field(description="When this instance started using it (Unix time)")
