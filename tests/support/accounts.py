"""Accounts for tests: written straight to the session's database with the service's own code."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.accounts.repository import AccountRepository
from shared.db.engine import Database
from shared.db.models import Role

T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    """An account with its password and one API key; ``headers`` authenticate as it."""

    user_id: uuid.UUID
    name: str
    password: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def run_anywhere(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, from synchronous code or from inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create(database_url: str, name: str, role: Role) -> Account:
    password = secrets.token_urlsafe(12)
    db = Database(database_url, pool_size=1)
    try:
        async with db.session() as session:
            accounts = AccountRepository(session)
            user = await accounts.create_user(name, password, role)
            _, api_key = await accounts.create_key(user.id, "tests")
    finally:
        await db.close()
    return Account(user.id, name, password, api_key)


def create_account(env: dict[str, str], name: str | None = None, role: str = "uploader") -> Account:
    """A new account (a random name unless given) in the database ``env["DATABASE_URL"]``."""
    name = name or f"t-{uuid.uuid4().hex[:12]}"
    return run_anywhere(_create(env["DATABASE_URL"], name, Role(role)))
