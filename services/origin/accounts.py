"""Accounts API: sign-in (OAuth2 password flow), the caller's account and its API keys.

``POST /api/auth/token`` takes the OAuth2 password form (``username``, ``password``) and answers
a short-lived bearer token for the pages; scripts and the CLI use API keys, made here once
signed in and shown only in the answer that creates them. Failed sign-ins are counted per
account name and per client address (``ORIGIN_LOGIN_*``); past the limit every attempt, right
or wrong, is a 429 with Retry-After until the window ends.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field

from services.origin.settings import Settings
from shared.accounts.repository import MAX_KEY_NAME_CHARS, AccountRepository
from shared.accounts.tokens import new_token
from shared.core.errors import Unauthorized
from shared.db.models import ApiKey
from shared.http.app import resources
from shared.http.auth import CHALLENGE, RequiredPrincipal
from shared.http.openapi import error_responses
from shared.runtime.ratelimit import Limit, RateLimiter
from shared.runtime.resources import Resources

Res = Annotated[Resources, Depends(resources)]
Form = Annotated[OAuth2PasswordRequestForm, Depends()]
# Credentials must not be kept by a browser or a proxy (RFC 6749, section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class Me(BaseModel):
    id: uuid.UUID
    name: str
    role: str


class KeyRequest(BaseModel):
    name: str = Field(default="default", min_length=1, max_length=MAX_KEY_NAME_CHARS)


class KeyInfo(BaseModel):
    """An API key as its owner sees it later: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKey(KeyInfo):
    key: str = Field(description="The whole key, shown this once: send it as a bearer token")


class KeyList(BaseModel):
    keys: list[KeyInfo]


def settings_of(res: Resources) -> Settings:
    assert isinstance(res.settings, Settings)
    return res.settings


def login_limits(settings: Settings) -> tuple[Limit, Limit]:
    """The failed sign-in limits: per account name and per client address."""
    window = settings.origin_login_window_seconds
    return (
        Limit("login-name", settings.origin_login_max_failures_per_name, window),
        Limit("login-address", settings.origin_login_max_failures_per_address, window),
    )


async def sign_in(res: Resources, name: str, password: str, address: str) -> str:
    """An access token for the account, unless the password is wrong or attempts are spent."""
    settings = settings_of(res)
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
    """The accounts API."""
    api = APIRouter(tags=["accounts"])

    @api.post("/api/auth/token", response_model=TokenResponse, responses=error_responses(401, 429))
    async def token(form: Form, request: Request, response: Response, res: Res) -> object:
        """Sign in with the account name and password (OAuth2 password flow)."""
        address = request.client.host if request.client else "unknown"
        access_token = await sign_in(res, form.username, form.password, address)
        response.headers.update(NO_STORE)
        return TokenResponse(
            access_token=access_token, expires_in=settings_of(res).auth_token_ttl_seconds
        )

    @api.get("/api/me", response_model=Me)
    async def me(principal: RequiredPrincipal) -> object:
        """The account the credential belongs to."""
        return Me(id=principal.user_id, name=principal.name, role=principal.role)

    @api.post("/api/keys", response_model=NewKey, status_code=201)
    async def create_key(
        principal: RequiredPrincipal, res: Res, response: Response, body: KeyRequest | None = None
    ) -> object:
        """A new API key of the caller's account; the answer is the only place it appears."""
        async with res.need_db().session() as session:
            key, plaintext = await AccountRepository(session).create_key(
                principal.user_id, (body or KeyRequest()).name
            )
        response.headers.update(NO_STORE)
        return NewKey(**_info(key).model_dump(), key=plaintext)

    @api.get("/api/keys", response_model=KeyList)
    async def list_keys(principal: RequiredPrincipal, res: Res) -> object:
        """The caller's API keys, newest first, revoked ones included; never their secrets."""
        async with res.need_db().session() as session:
            keys = await AccountRepository(session).keys_of(principal.user_id)
        return KeyList(keys=[_info(key) for key in keys])

    @api.delete("/api/keys/{key_id}", status_code=204)
    async def revoke_key(key_id: uuid.UUID, principal: RequiredPrincipal, res: Res) -> Response:
        """Revoke one of the caller's API keys: it is refused from the next request on."""
        async with res.need_db().session() as session:
            await AccountRepository(session).revoke_key(principal.user_id, key_id)
        return Response(status_code=204)

    return api


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo.model_validate(key)
