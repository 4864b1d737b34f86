"""HMAC-SHA256 URL signing with expiry, key ids for rotation, and path-prefix tokens.

Query signatures follow the streaming gateway the platform grew from::

    sig = hex(HMAC-SHA256(secret, path + str(exp)))      ->  ?exp=<exp>&sig=<sig>[&kid=<kid>]

``path`` is the object path after ``/origin/`` (``videos/<id>/hls/master.m3u8``). A ``kid``
names the key; without one every accepted key is tried, so URLs signed before key ids existed
still verify.

Path tokens cover a prefix instead of one object, and sit in the path so that relative child
URIs inherit them and caches can key on the object alone::

    /origin/t/<kid>.<exp>.<sig>/videos/<id>/...   with sig = HMAC(secret, "t:" + prefix + str(exp))

The prefix is not spelled out in the URL: a verifier tries each folder prefix of the object path
(``verify_token_path``), so origin and edges need nothing but the keys to check a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs, urlencode

from shared.core.errors import BadRequest, Forbidden
from shared.core.keys import check_key

TOKEN_SEGMENT = "t"
# Where origin and edges serve objects: ``/origin/<object path>`` or ``/origin/t/<token>/...``.
DELIVERY_PREFIX = "/origin/"
# A signature is the hex of an HMAC-SHA256; anything else is refused before any HMAC is made.
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SignedQuery:
    exp: int
    sig: str
    kid: str | None

    def query(self) -> str:
        """The query string (without ``?``)."""
        params: dict[str, str | int] = {"exp": self.exp, "sig": self.sig}
        if self.kid:
            params["kid"] = self.kid
        return urlencode(params)


def _hmac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def gateway_signature(secret: str, path: str, exp: int) -> str:
    """The gateway-compatible signature of ``path`` valid until ``exp``."""
    return _hmac(secret, path + str(exp))


def split_token_path(path: str) -> tuple[str, str] | None:
    """``(token, object_path)`` of ``t/<token>/<object_path>``, or None for other paths."""
    marker = TOKEN_SEGMENT + "/"
    if not path.startswith(marker):
        return None
    token, slash, rest = path[len(marker) :].partition("/")
    if not slash or not token or not rest:
        return None
    return token, rest


def folder_prefixes(path: str) -> list[str]:
    """Every folder prefix of ``path``, shortest first: ``a/``, ``a/b/`` for ``a/b/c``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


class Signer:
    """Signs with the current key; verifies against every key still accepted."""

    def __init__(self, keys: dict[str, str], current_key_id: str) -> None:
        if current_key_id not in keys:
            raise ValueError(f"current signing key {current_key_id!r} is not among the keys")
        self.keys = dict(keys)
        self.current_key_id = current_key_id

    @property
    def _secret(self) -> str:
        return self.keys[self.current_key_id]

    def sign(self, path: str, ttl_seconds: int, *, now: float | None = None) -> SignedQuery:
        """Sign ``path`` for ``ttl_seconds`` from now."""
        exp = int(now if now is not None else time.time()) + int(ttl_seconds)
        return SignedQuery(exp, gateway_signature(self._secret, path, exp), self.current_key_id)

    def signed_url(self, base: str, path: str, ttl_seconds: int) -> str:
        """``base/path?exp=..&sig=..&kid=..``."""
        return f"{base.rstrip('/')}/{path}?{self.sign(path, ttl_seconds).query()}"

    def verify(
        self,
        path: str,
        exp: str | int | None,
        sig: str | None,
        kid: str | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """Return ``exp`` when the signature is valid and unexpired; raise Forbidden otherwise."""
        if exp is None or sig is None or exp == "" or sig == "":
            raise Forbidden("missing signature: exp and sig query parameters are required")
        try:
            exp_value = int(exp)
        except (TypeError, ValueError):
            raise Forbidden("malformed exp: expected a unix timestamp") from None
        if exp_value < int(now if now is not None else time.time()):
            raise Forbidden("signature expired", expired_at=exp_value)
        if not self._matches(path + str(exp_value), sig, kid):
            raise Forbidden("invalid signature")
        return exp_value

    def _matches(self, message: str, sig: str, kid: str | None) -> bool:
        if _SIGNATURE.fullmatch(sig) is None:
            return False
        if kid is not None:
            secret = self.keys.get(kid)
            if secret is None:
                return False
            candidates = [secret]
        else:
            candidates = list(self.keys.values())
        return any(hmac.compare_digest(_hmac(secret, message), sig) for secret in candidates)

    def make_token(self, prefix: str, ttl_seconds: int, *, now: float | None = None) -> str:
        """A path token granting every object under ``prefix`` until it expires."""
        exp = int(now if now is not None else time.time()) + int(ttl_seconds)
        sig = _hmac(self._secret, f"t:{prefix}{exp}")
        return f"{self.current_key_id}.{exp}.{sig}"

    def verify_token(self, token: str, path: str, prefix: str, *, now: float | None = None) -> int:
        """Check that ``token`` is valid, unexpired, and that ``path`` lies under ``prefix``."""
        try:
            kid, exp_text, sig = token.split(".", 2)
            exp = int(exp_text)
        except ValueError:
            raise Forbidden("malformed path token") from None
        if not path.startswith(prefix):
            raise Forbidden("path lies outside the token's prefix")
        if exp < int(now if now is not None else time.time()):
            raise Forbidden("token expired", expired_at=exp)
        if not self._matches(f"t:{prefix}{exp}", sig, kid):
            raise Forbidden("invalid token")
        return exp

    def token_url(self, base: str, prefix: str, path: str, ttl_seconds: int) -> str:
        """``base/t/<token>/path`` with a token covering ``prefix`` (which ``path`` must lie in)."""
        if not path.startswith(prefix):
            raise ValueError(f"{path!r} lies outside {prefix!r}")
        token = self.make_token(prefix, ttl_seconds)
        return f"{base.rstrip('/')}/{TOKEN_SEGMENT}/{token}/{path}"

    def verify_token_path(self, token: str, path: str, *, now: float | None = None) -> str:
        """Check a token against every folder prefix of ``path``; return the prefix it covers.

        ``path`` passes the key check first, so its depth, and with it the HMACs tried, is bounded.
        """
        check_key(path)
        try:
            kid, exp_text, sig = token.split(".", 2)
            exp = int(exp_text)
        except ValueError:
            raise Forbidden("malformed path token") from None
        if _SIGNATURE.fullmatch(sig) is None:
            raise Forbidden("malformed path token")
        if exp < int(now if now is not None else time.time()):
            raise Forbidden("token expired", expired_at=exp)
        for prefix in folder_prefixes(path):
            if self._matches(f"t:{prefix}{exp}", sig, kid):
                return prefix
        raise Forbidden("invalid token")


class Grant(NamedTuple):
    """What a verified delivery credential opens: one object, until ``exp``."""

    key: str
    exp: int
    by_token: bool  # a path token rather than a query signature


def request_key(signer: Signer, rest: str, query_string: str, *, now: float | None = None) -> Grant:
    """The object a delivery request names, once its credential verified.

    ``rest`` is the request path after the delivery prefix (``/origin/``). Raises Forbidden for
    a missing, expired or forged credential and BadRequest for a path that names no object.
    """
    token_path = split_token_path(rest)
    if token_path is not None:
        token, key = token_path
        check_key(key)
        signer.verify_token_path(token, key, now=now)
        return Grant(key, int(token.split(".", 2)[1]), True)
    if rest.startswith(TOKEN_SEGMENT + "/"):
        raise BadRequest("a path token must be followed by an object path")
    check_key(rest)
    query = parse_qs(query_string)
    exp = signer.verify(
        rest,
        query.get("exp", [None])[0],
        query.get("sig", [None])[0],
        query.get("kid", [None])[0],
        now=now,
    )
    return Grant(rest, exp, False)


class Credentials:
    """Delivery credentials that verified, so that a URL a player repeats costs one HMAC.

    Only credentials that passed ``request_key`` are remembered, keyed by the exact path and
    query, and their expiry is checked again on every request: an altered, forged or expired
    URL never matches a live entry and is verified (and refused) in full.
    """

    def __init__(
        self, signer: Signer, *, prefix: str = DELIVERY_PREFIX, max_entries: int = 8192
    ) -> None:
        self.signer = signer
        self.prefix = prefix
        self.max_entries = max_entries
        self._verified: dict[tuple[str, str], Grant] = {}

    def check(self, path: str, query_string: str, now: float) -> Grant:
        """The grant of a request for ``path`` (under ``prefix``) whose credential is valid now;
        raises like ``request_key``."""
        # Keyed by the path as the server gave it: a hit neither copies nor re-hashes a slice.
        request = (path, query_string)
        known = self._verified.get(request)
        if known is not None:
            if known.exp >= int(now):
                # The remembered grant itself: a hit allocates nothing.
                return known
            del self._verified[request]
        if not path.startswith(self.prefix):
            raise BadRequest(f"objects are served under {self.prefix}")
        verified = request_key(self.signer, path[len(self.prefix) :], query_string, now=now)
        if len(self._verified) >= self.max_entries:
            # Oldest first: dictionaries keep insertion order.
            del self._verified[next(iter(self._verified))]
        self._verified[request] = verified
        return verified
