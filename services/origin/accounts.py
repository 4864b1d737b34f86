"""Accounts API: the caller's API keys, for scripts and the CLI.

Made here once signed in (``shared.http.signin``) and shown only in the answer that creates
them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from shared.accounts.repository import MAX_KEY_NAME_CHARS, AccountRepository
from shared.db.models import ApiKey
from shared.http.app import resources
from shared.http.auth import RequiredPrincipal
from shared.http.signin import NO_STORE
from shared.runtime.resources import Resources

Res = Annotated[Resources, Depends(resources)]


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


def router() -> APIRouter:
    """The API keys API."""
    api = APIRouter(tags=["accounts"])

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
