"""Admin bearer tokens: what the operator endpoints of every service check."""

from __future__ import annotations

import hmac

from shared.core.errors import Forbidden, Unauthorized

MIN_TOKEN_CHARS = 16


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def check_admin_token(given: str | None, expected: str, action: str) -> None:
    """Refuse ``action`` (401 without a token, 403 with a wrong one) unless ``given`` matches."""
    if not given:
        raise Unauthorized(
            f"{action} needs the admin token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the admin token is not valid")
