"""Sign-in for the pages: the OAuth2 password flow, the signed-in account, the pages' script.

``POST /api/auth/token`` takes the OAuth2 password form (``username``, ``password``) and answers
a short-lived bearer token; ``GET /api/me`` names the account a credential belongs to. Every
service with a page mounts this router, so each page signs in on its own origin (a token is
good at every service: they share ``AUTH_TOKEN_SECRET``). Failed sign-ins are counted in Redis
per account name and per client address (``LOGIN_*``), across those services; past the limit
every attempt, right or wrong, is a 429 with Retry-After until the window ends.

``GET /static/signin.js`` is the pages' sign-in form (``static/signin.js``): it keeps the token
in ``sessionStorage`` (a header, never a cookie, so there is no CSRF surface).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from shared.accounts.repository import AccountRepository
from shared.accounts.tokens import new_token
from shared.core.errors import Unauthorized
from shared.core.settings import BaseServiceSettings
from shared.http.app import resources
from shared.http.auth import CHALLENGE, RequiredPrincipal
from shared.http.clients import request_client
from shared.http.openapi import error_responses
from shared.runtime.ratelimit import Limit, RateLimiter
from shared.runtime.resources import Resources

Res = Annotated[Resources, Depends(resources)]
Form = Annotated[OAuth2PasswordRequestForm, Depends()]
# Credentials must not be kept by a browser or a proxy (RFC 6749, section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SCRIPT = Path(__file__).parent / "static" / "signin.js"


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class Me(BaseModel):
    id: uuid.UUID
    name: str
    role: str


def login_limits(settings: BaseServiceSettings) -> tuple[Limit, Limit]:
    """The failed sign-in limits: per account name and per client address."""
    window = settings.login_window_seconds
    return (
        Limit("login-name", settings.login_max_failures_per_name, window),
        Limit("login-address", settings.login_max_failures_per_address, window),
    )


async def sign_in(res: Resources, name: str, password: str, address: str) -> str:
    """An access token for the account, unless the password is wrong or attempts are spent."""
    settings = res.settings
    limiter = RateLimiter(res.need_redis(), settings.mq_prefix)
    by_name, by_address = login_limits(settings)
    await limiter.check(by_name, name, "too many failed sign-ins for this account")
    await limiter.check(by_address, address, "too many failed sign-ins from this address")
    async with res.need_db().session() as session:
        user = await AccountRepository(session).authenticate(name, password)
    if user is None:
        await limiter.record(by_name, name)
        await limiter.record(by_address, address)
        raise Unauthorized("wrong account name or password", headers=CHALLENGE)
    await limiter.reset(by_name, name)
    return new_token(settings.auth_token_secret, user.id, settings.auth_token_ttl_seconds)


def router() -> APIRouter:
    """Sign-in, the signed-in account and the pages' sign-in script."""
    api = APIRouter(tags=["accounts"])

    @api.post("/api/auth/token", response_model=TokenResponse, responses=error_responses(401, 429))
    async def token(form: Form, request: Request, response: Response, res: Res) -> object:
        """Sign in with the account name and password (OAuth2 password flow)."""
        address = request_client(request, res.settings.trusted_proxies)
        access_token = await sign_in(res, form.username, form.password, address)
        response.headers.update(NO_STORE)
        return TokenResponse(
            access_token=access_token, expires_in=res.settings.auth_token_ttl_seconds
        )

    @api.get("/api/me", response_model=Me)
    async def me(principal: RequiredPrincipal) -> object:
        """The account the credential belongs to."""
        return Me(id=principal.user_id, name=principal.name, role=principal.role)

    @api.get("/static/signin.js", include_in_schema=False)
    async def script() -> FileResponse:
        """The pages' sign-in form."""
        return FileResponse(
            SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    return api
