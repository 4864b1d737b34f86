"""Accounts written to the database directly: ``vsp user create`` and the demo of ``vsp up``."""

from __future__ import annotations

import secrets
import uuid
from typing import NamedTuple

from shared.accounts.repository import AccountRepository
from shared.db.engine import Database
from shared.db.models import Role

DEMO_NAME = "demo"
DEMO_KEY_NAME = "vsp up"


class DemoAccount(NamedTuple):
    name: str
    password: str
    api_key: str


async def create_user(database_url: str, name: str, password: str, role: Role) -> uuid.UUID:
    """Create an account; its id."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.session() as session:
            user = await AccountRepository(session).create_user(name, password, role)
            return user.id
    finally:
        await db.close()


async def demo_account(database_url: str) -> DemoAccount:
    """The demo uploader, made on first use, with a fresh password and API key each call.

    Passwords are stored hashed, so the one printed is new each run; the previous run's key is
    revoked so the keys do not pile up.
    """
    password = secrets.token_urlsafe(12)
    db = Database(database_url, pool_size=1)
    try:
        async with db.session() as session:
            accounts = AccountRepository(session)
            user = await accounts.user_by_name(DEMO_NAME)
            if user is None:
                user = await accounts.create_user(DEMO_NAME, password, Role.uploader)
            else:
                await accounts.set_password(user, password)
            for old in await accounts.keys_of(user.id):
                if old.name == DEMO_KEY_NAME and old.revoked_at is None:
                    await accounts.revoke_key(user.id, old.id)
            _, api_key = await accounts.create_key(user.id, DEMO_KEY_NAME)
    finally:
        await db.close()
    return DemoAccount(DEMO_NAME, password, api_key)
