"""Who is asking: accounts' bearer credentials, and the admin token of operator endpoints.

A request carries ``Authorization: Bearer <credential>``, where the credential is an access
token from ``POST /api/auth/token`` (``shared.accounts.tokens``) or an API key
``vsp_<prefix>_<secret>`` (``shared.accounts.keys``). No credential is an anonymous caller
(``None``); a credential that is malformed, forged, expired or revoked is a 401, never
anonymous, so a client learns at once that its key stopped working.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError

from shared.accounts import keys, tokens
from shared.accounts.repository import AccountRepository
from shared.core.errors import Forbidden, Unauthorized
from shared.db.models import Role, User
from shared.http.clients import request_client
from shared.runtime.ratelimit import Limit, RateLimiter
from shared.runtime.resources import Resources

log = logging.getLogger(__name__)

# Longer than any access token or API key: anything longer is refused before any work.
MAX_CREDENTIAL_CHARS = 256
CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class Principal:
    """The account a request acts for."""

    user_id: uuid.UUID
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin.value

    @classmethod
    def of(cls, user: User) -> Principal:
        return cls(user.id, user.name, user.role)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


async def authenticate(res: Resources, authorization: str | None) -> Principal | None:
    """The principal of an ``Authorization`` header; None without one, 401 for a bad one."""
    credential = bearer_token(authorization)
    if credential is None:
        return None
    if len(credential) > MAX_CREDENTIAL_CHARS:
        raise Unauthorized("the credential is not valid", headers=INVALID_CHALLENGE)
    async with res.need_db().session() as session:
        accounts = AccountRepository(session)
        if keys.is_api_key(credential):
            user = await accounts.user_for_key(credential)
            if user is None:
                raise Unauthorized(
                    "the API key is not valid or was revoked", headers=INVALID_CHALLENGE
                )
        else:
            user_id = tokens.verify_token(res.settings.auth_token_secret, credential)
            user = await accounts.get_user(user_id)
            if user is None:
                raise Unauthorized("the account no longer exists", headers=INVALID_CHALLENGE)
        return Principal.of(user)


async def principal_of(request: Request) -> Principal | None:
    """The principal of a request to an app built by ``shared.http.app.create_app``, once the
    request is counted against the API rate limits (``spend_api_rate``)."""
    res: Resources = request.app.state.resources
    try:
        principal = await authenticate(res, request.headers.get("authorization"))
    except Unauthorized:
        await spend_api_rate(res, request, None)  # guessing credentials costs the address
        raise
    await spend_api_rate(res, request, principal)
    return principal


async def spend_api_rate(res: Resources, request: Request, principal: Principal | None) -> None:
    """Count an API request: an account's against the account, from whatever address; an
    anonymous one (or one with a bad credential) against its client address. 429 once the
    budget is spent (``API_RATE_LIMIT_*``); admins are not limited. Without Redis the request
    goes through uncounted: a soft limit is not worth refusing viewers while Redis is away."""
    settings = res.settings
    window = settings.api_rate_limit_window_seconds
    if principal is None:
        limit = Limit("api-address", settings.api_rate_limit_per_address, window)
        subject = request_client(request, settings.trusted_proxies)
        what = "too many API requests from this address"
    elif not principal.is_admin:
        limit = Limit("api-account", settings.api_rate_limit_per_account, window)
        subject, what = str(principal.user_id), "too many API requests for this account"
    else:
        return
    if not limit.max_events or res.redis is None:
        return
    try:
        await RateLimiter(res.redis, settings.mq_prefix).spend(limit, subject, what)
    except RedisError:
        log.warning("API rate limits not counted: Redis is unavailable")


# Declares the scheme in each OpenAPI document; the header itself is read by ``principal_of``.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="account",
    description="An access token from POST /api/auth/token (origin) or an API key vsp_...",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def optional_principal(request: Request, _: Credentials) -> Principal | None:
    """FastAPI dependency: the caller's principal, or None for an anonymous caller."""
    return await principal_of(request)


async def require_principal(request: Request, _: Credentials) -> Principal:
    """FastAPI dependency: the caller's principal; 401 for an anonymous caller."""
    principal = await principal_of(request)
    if principal is None:
        raise Unauthorized(
            "this request needs an account: send Authorization: Bearer <access token or API key>",
            headers=CHALLENGE,
        )
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
RequiredPrincipal = Annotated[Principal, Depends(require_principal)]


def may_manage(principal: Principal | None, owner_id: uuid.UUID | None) -> bool:
    """Whether the principal may change or delete what ``owner_id`` owns (owner or admin)."""
    if principal is None:
        return False
    return principal.is_admin or (owner_id is not None and principal.user_id == owner_id)


def check_admin_token(given: str | None, expected: str, action: str) -> None:
    """Refuse ``action`` (401 without a token, 403 with a wrong one) unless ``given`` matches."""
    if not given:
        raise Unauthorized(
            f"{action} needs the admin token (Authorization: Bearer <token>)",
            headers=CHALLENGE,
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden("the admin token is not valid")
