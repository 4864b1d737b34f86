"""SQL for users and API keys; the accounts API, the CLI and the credential check call these."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.accounts import keys, passwords
from shared.core.errors import BadRequest, Conflict, NotFound
from shared.db.models import ApiKey, Role, User

NAME_PATTERN = re.compile(r"[a-z0-9_-]{3,32}")
MAX_KEY_NAME_CHARS = 64
# last_used_at is written at most this often per key, so a busy script is not a write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def check_name(name: str) -> None:
    """BadRequest unless ``name`` is a valid account (channel) name."""
    if not NAME_PATTERN.fullmatch(name):
        raise BadRequest("an account name has 3 to 32 characters from a-z, 0-9, '_' and '-'")


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create_user(self, name: str, password: str, role: Role = Role.uploader) -> User:
        """A new account; Conflict when the name is taken."""
        check_name(name)
        password_hash = await passwords.hash_password(password)
        if await self.user_by_name(name) is not None:
            raise Conflict(f"the account name {name!r} is taken")
        user = User(name=name, password_hash=password_hash, role=role.value)
        self.session.add(user)
        await self.session.flush()
        return user

    async def set_password(self, user: User, password: str) -> None:
        """Replace the account's password."""
        user.password_hash = await passwords.hash_password(password)
        await self.session.flush()

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def user_by_name(self, name: str) -> User | None:
        return await self.session.scalar(select(User).where(User.name == name))

    async def authenticate(self, name: str, password: str) -> User | None:
        """The account with this name and password, else None (as slow either way)."""
        user = await self.user_by_name(name) if NAME_PATTERN.fullmatch(name) else None
        ok = await passwords.verify_password(user.password_hash if user else None, password)
        if user is None or not ok:
            return None
        if passwords.needs_rehash(user.password_hash):
            await self.set_password(user, password)
        return user

    async def create_key(self, user_id: uuid.UUID, name: str) -> tuple[ApiKey, str]:
        """A new key of the account and its plaintext, which is not kept anywhere."""
        if not 1 <= len(name) <= MAX_KEY_NAME_CHARS:
            raise BadRequest(f"a key name has 1 to {MAX_KEY_NAME_CHARS} characters")
        fresh = keys.new_key()
        key = ApiKey(user_id=user_id, name=name, prefix=fresh.prefix, secret_hash=fresh.secret_hash)
        self.session.add(key)
        await self.session.flush()
        await self.session.refresh(key)
        return key, fresh.plaintext

    async def keys_of(self, user_id: uuid.UUID) -> Sequence[ApiKey]:
        """The account's keys, newest first, revoked ones included."""
        stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
        return (await self.session.scalars(stmt)).all()

    async def revoke_key(self, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
        """Revoke one of the account's keys (again is a no-op); NotFound if it has no such key."""
        key = await self.session.get(ApiKey, key_id)
        if key is None or key.user_id != user_id:
            raise NotFound(f"no API key {key_id}")
        if key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
            await self.session.flush()
        return key

    async def user_for_key(self, credential: str) -> User | None:
        """The owner of a valid, unrevoked key (recording its use), else None."""
        parts = keys.split_key(credential)
        if parts is None:
            return None
        prefix, secret = parts
        key = await self.session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None or key.revoked_at is not None:
            return None
        if not keys.secret_matches(secret, key.secret_hash):
            return None
        now = datetime.now(UTC)
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            key.last_used_at = now
            await self.session.flush()
        return await self.get_user(key.user_id)
