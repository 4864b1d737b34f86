"""Password hashing with Argon2id (argon2-cffi's RFC 9106 low-memory profile).

Hashing costs tens of milliseconds of CPU on purpose, so the async functions run it in a
thread and never block the event loop; at most ``MAX_CONCURRENT_HASHES`` run at once per
process, so a burst of sign-ins queues instead of taking 64 MiB of memory each.
"""

from __future__ import annotations

import asyncio
import functools
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.core.errors import BadRequest

MIN_PASSWORD_CHARS = 8
# Argon2 reads the whole password; a bound keeps one request from costing more than the rest.
MAX_PASSWORD_CHARS = 256

MAX_CONCURRENT_HASHES = 4

_hasher = PasswordHasher()
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


@functools.cache
def _unknown_user_hash() -> str:
    """Verified against when the name is unknown, so it costs as long as a wrong password."""
    return _hasher.hash("no account has this password")


def check_password_rules(password: str) -> None:
    """BadRequest unless the password's length is within the bounds."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise BadRequest(f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")


def hash_password_sync(password: str) -> str:
    """The Argon2id hash of ``password`` (blocking)."""
    check_password_rules(password)
    with _hashing:
        return _hasher.hash(password)


async def hash_password(password: str) -> str:
    """The Argon2id hash of ``password``, computed in a thread."""
    check_password_rules(password)
    return await asyncio.to_thread(hash_password_sync, password)


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        with _hashing:
            matches = _hasher.verify(stored_hash or _unknown_user_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matches and stored_hash is not None


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (None: an unknown name, always False)."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    return await asyncio.to_thread(_verify, stored_hash, password)


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(stored_hash)
