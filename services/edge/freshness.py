"""How long an origin response may be served: Cache-Control (RFC 9111, RFC 5861) to deadlines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """Freshness deadlines relative to when the response was received."""

    storable: bool
    ttl_seconds: float
    stale_while_revalidate_seconds: float
    stale_if_error_seconds: float


def parse_cache_control(header: str | None) -> dict[str, str | None]:
    """Directives of a Cache-Control header, names lower-cased, quotes stripped."""
    directives: dict[str, str | None] = {}
    for part in (header or "").split(","):
        name, eq, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"') if eq else None
    return directives


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(int(value or "")))
    except ValueError:
        return None


def policy_for(
    cache_control: str | None,
    *,
    max_ttl_seconds: float,
    default_swr_seconds: float,
    default_sie_seconds: float,
) -> Policy:
    """The edge's policy for a 200 response with this Cache-Control.

    ``private`` and ``no-store`` responses are not stored (a shared cache must not), ``no-cache``
    ones are stored but revalidated on every use, and without max-age nothing is assumed fresh.
    """
    cc = parse_cache_control(cache_control)
    storable = "private" not in cc and "no-store" not in cc
    ttl = _seconds(cc.get("s-maxage")) if "s-maxage" in cc else _seconds(cc.get("max-age"))
    if "no-cache" in cc or ttl is None:
        ttl = 0.0
    swr = _seconds(cc.get("stale-while-revalidate"))
    sie = _seconds(cc.get("stale-if-error"))
    must_revalidate = "must-revalidate" in cc or "proxy-revalidate" in cc
    return Policy(
        storable=storable,
        ttl_seconds=min(ttl, max_ttl_seconds),
        stale_while_revalidate_seconds=0.0
        if must_revalidate
        else (swr if swr is not None else default_swr_seconds),
        stale_if_error_seconds=0.0
        if must_revalidate
        else (sie if sie is not None else default_sie_seconds),
    )
