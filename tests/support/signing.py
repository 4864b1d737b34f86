"""Signed delivery URLs, as a viewer gets them, with the session's signing keys."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from shared.core.settings import BaseServiceSettings
from shared.core.signing import Signer


def signer_of(settings: BaseServiceSettings | None = None) -> Signer:
    """The signer of ``settings``; by default of the environment's (the session's) settings."""
    settings = settings or BaseServiceSettings()
    return Signer.from_settings(settings)


def signed(base: str, key: str, ttl: int = 300) -> str:
    """A viewer's query-signed URL of ``key`` through ``base`` (an edge, haproxy or origin)."""
    return signer_of().signed_url(f"{base}/origin", key, ttl)


def signed_path(key: str, ttl_seconds: int = 3600) -> str:
    """``/origin/<key>?exp=..&sig=..`` for any host in front of an origin."""
    return f"/origin/{key}?{signer_of().sign(key, ttl_seconds).query()}"


def tokened(base: str, key: str, prefix: str, ttl: int = 300) -> str:
    """A viewer's path-token URL of ``key`` through ``base``."""
    return f"{base}/origin/t/{signer_of().make_token(prefix, ttl)}/{key}"


def query_of(url: str) -> dict[str, str]:
    """The query parameters of ``url``, one value each."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
