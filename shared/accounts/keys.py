"""API keys: ``vsp_<prefix>_<secret>``, shown once, stored as the prefix and a hash of the secret.

The prefix (16 hex digits) finds the row; the secret (32 random bytes, URL-safe base64) is
stored as its SHA-256: a key is as random as a hash, so a slow password hash adds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

KEY_SCHEME = "vsp"
_KEY = re.compile(r"vsp_(?P<prefix>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})")


class NewKey(NamedTuple):
    prefix: str
    secret_hash: str
    # The whole key, handed to its owner once and never stored.
    plaintext: str


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> NewKey:
    """A fresh random key."""
    prefix = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(prefix, hash_secret(secret), f"{KEY_SCHEME}_{prefix}_{secret}")


def is_api_key(credential: str) -> bool:
    """Whether a bearer credential is meant as an API key (rather than an access token)."""
    return credential.startswith(KEY_SCHEME + "_")


def split_key(credential: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else None."""
    match = _KEY.fullmatch(credential)
    return (match["prefix"], match["secret"]) if match else None


def secret_matches(secret: str, secret_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)
