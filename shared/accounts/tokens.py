"""Access tokens: ``at1.<user id>.<expiry>.<HMAC-SHA256>``, short-lived, for the pages.

The MAC covers the version, the user id and the expiry (``AUTH_TOKEN_SECRET``); a token names
only its user, whose name and role are read from the database when it is used.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from shared.core.errors import Unauthorized

TOKEN_VERSION = "at1"


def _mac(secret: str, user_id: uuid.UUID, exp: int) -> str:
    message = f"{TOKEN_VERSION}\n{user_id.hex}\n{exp}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_token(
    secret: str, user_id: uuid.UUID, ttl_seconds: int, *, now: float | None = None
) -> str:
    """A token for ``user_id`` that expires ``ttl_seconds`` from now."""
    exp = int(now if now is not None else time.time()) + ttl_seconds
    return f"{TOKEN_VERSION}.{user_id.hex}.{exp}.{_mac(secret, user_id, exp)}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> uuid.UUID:
    """The user id a valid token names; Unauthorized when it is malformed, forged or expired."""
    parts = token.split(".")
    try:
        version, user_hex, exp_text, mac = parts
        user_id = uuid.UUID(hex=user_hex)
        exp = int(exp_text)
    except ValueError:
        raise _invalid("the access token is not valid") from None
    if version != TOKEN_VERSION or not hmac.compare_digest(
        mac.encode(), _mac(secret, user_id, exp).encode()
    ):
        raise _invalid("the access token is not valid")
    if exp < (now if now is not None else time.time()):
        raise _invalid("the access token has expired: sign in again")
    return user_id


def _invalid(detail: str) -> Unauthorized:
    return Unauthorized(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
