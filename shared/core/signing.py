"""HMAC-SHA256 delivery credentials: query signatures and path tokens, versioned, with key ids.

Query signatures (version 2, what the platform issues)::

    sig = "v2." + hex(HMAC-SHA256(secret, "v2\\n" + path + "\\n" + str(exp)))
      ->  ?exp=<exp>&sig=v2.<hex>&kid=<kid>

``path`` is the object path after ``/origin/`` (``videos/<id>/hls/master.m3u8``). A key never
holds a newline (``check_key``), so one signature names exactly one (path, exp) pair. A ``kid``
names the key; without one every accepted key is tried.

Path tokens (version 2) cover a folder instead of one object and sit in the path, so that
relative child URIs inherit them and caches key on the object alone::

    /origin/t/<kid>.<exp>.<depth>.<hex>/videos/<id>/hls/...
      hex = hex(HMAC-SHA256(secret, "v2\\nt\\n" + prefix + "\\n" + str(exp)))

``prefix`` is the first ``depth`` folders of the object path (``videos/<id>/hls/`` is depth 3).
The token names the one prefix it covers, so checking it costs one HMAC whatever the path.

Every credential is refused, before any HMAC, when its ``exp`` lies further ahead than the
longest life the platform issues (``max_ttl_seconds``, ``SIGNING_MAX_TTL_SECONDS``, plus
``CLOCK_SKEW_SECONDS``); the signer never issues one longer.

Legacy formats, from before version 2, still verify while ``accept_legacy``
(``SIGNING_ACCEPT_LEGACY``, on by default) so that URLs already handed out keep playing:

- the streaming gateway's query signature, ``sig = hex(HMAC(secret, path + str(exp)))``. Without
  a separator the digits ending a key can move into ``exp`` (a signature of ``.../part1`` until
  ``1700000000`` is also one of ``.../part`` until ``11700000000``); the ``exp`` bound refuses
  every such re-split, since it makes ``exp`` at least ten times larger (or, the other way,
  long past).
- tokens ``<kid>.<exp>.<hex>`` with ``hex = HMAC(secret, "t:" + prefix + str(exp))``, which were
  only issued for a master playlist's folder ``videos/<id>/hls/``: they are checked at that
  depth alone.

Both die out by themselves once ``SIGNING_MAX_TTL_SECONDS`` has passed after the upgrade; turn
``SIGNING_ACCEPT_LEGACY`` off then.
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
from shared.core.keys import MAX_KEY_DEPTH, check_key
from shared.core.settings import BaseServiceSettings

TOKEN_SEGMENT = "t"
# Where origin and edges serve objects: ``/origin/<object path>`` or ``/origin/t/<token>/...``.
DELIVERY_PREFIX = "/origin/"
VERSION_2 = "v2."
# The longest life of a credential when the settings name none: a video of up to a day.
DEFAULT_MAX_TTL_SECONDS = 86_400
# How far a verifier's clock may lag the signer's.
CLOCK_SKEW_SECONDS = 60
# Legacy tokens covered the master playlist's folder, ``videos/<id>/hls/``.
LEGACY_TOKEN_DEPTH = 3
# kid, exp, depth and a 64-digit hex MAC fit well within this; longer is refused unread.
MAX_TOKEN_CHARS = 160
# Every check below runs before any HMAC is made.
_EXP = re.compile(r"[1-9][0-9]{0,11}")
_SIGNATURE = re.compile(r"(v2\.)?([0-9a-f]{64})")
_MAC = re.compile(r"[0-9a-f]{64}")
_DEPTH = re.compile(r"[1-9][0-9]?")


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


def query_message(path: str, exp: int) -> str:
    """What a version 2 query signature of ``path`` until ``exp`` is the HMAC of."""
    return f"v2\n{path}\n{exp}"


def token_message(prefix: str, exp: int) -> str:
    """What a version 2 token over ``prefix`` until ``exp`` is the HMAC of."""
    return f"v2\nt\n{prefix}\n{exp}"


def gateway_signature(secret: str, path: str, exp: int) -> str:
    """The streaming gateway's (legacy, unversioned) signature of ``path`` until ``exp``."""
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


def prefix_at(path: str, depth: int) -> str | None:
    """The first ``depth`` folders of ``path`` (``a/b/`` at depth 2 of ``a/b/c``), or None when
    ``path`` has no object below that many folders."""
    parts = path.split("/", depth)
    if len(parts) <= depth:
        return None
    return "/".join(parts[:depth]) + "/"


def _depth_of(prefix: str) -> int:
    if not prefix.endswith("/"):
        raise ValueError(f"a token prefix is a folder ending in '/': {prefix!r}")
    check_key(prefix[:-1])
    return prefix.count("/")


class Signer:
    """Signs with the current key; verifies against every key still accepted."""

    def __init__(
        self,
        keys: dict[str, str],
        current_key_id: str,
        *,
        max_ttl_seconds: int = DEFAULT_MAX_TTL_SECONDS,
        accept_legacy: bool = True,
    ) -> None:
        if current_key_id not in keys:
            raise ValueError(f"current signing key {current_key_id!r} is not among the keys")
        if any(not kid or "." in kid for kid in keys):
            raise ValueError("a key id is a non-empty name without '.' (tokens are split on it)")
        self.keys = dict(keys)
        self.current_key_id = current_key_id
        self.max_ttl_seconds = max_ttl_seconds
        self.accept_legacy = accept_legacy

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> Signer:
        """The signer the ``SIGNING_*`` settings describe."""
        return cls(
            settings.signing_keys,
            settings.signing_key_id,
            max_ttl_seconds=settings.signing_max_ttl_seconds,
            accept_legacy=settings.signing_accept_legacy,
        )

    @property
    def _secret(self) -> str:
        return self.keys[self.current_key_id]

    def _expiry(self, ttl_seconds: int, now: float | None) -> int:
        # Never beyond what a verifier accepts: a longer life would only be refused.
        life = min(int(ttl_seconds), self.max_ttl_seconds)
        return int(now if now is not None else time.time()) + life

    def sign(self, path: str, ttl_seconds: int, *, now: float | None = None) -> SignedQuery:
        """Sign ``path`` for ``ttl_seconds`` from now (at most ``max_ttl_seconds``)."""
        exp = self._expiry(ttl_seconds, now)
        sig = VERSION_2 + _hmac(self._secret, query_message(path, exp))
        return SignedQuery(exp, sig, self.current_key_id)

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
        exp_value = self._check_exp(str(exp), now, "signature")
        parsed = _SIGNATURE.fullmatch(sig)
        if parsed is None:
            raise Forbidden("invalid signature: expected v2.<64 hex digits>")
        versioned, mac = parsed.groups()
        if versioned:
            message = query_message(path, exp_value)
        else:
            self._check_legacy()
            message = path + str(exp_value)
        if not self._matches(message, mac, kid):
            raise Forbidden("invalid signature")
        return exp_value

    def make_token(self, prefix: str, ttl_seconds: int, *, now: float | None = None) -> str:
        """A path token granting every object under the folder ``prefix`` until it expires."""
        depth = _depth_of(prefix)
        exp = self._expiry(ttl_seconds, now)
        mac = _hmac(self._secret, token_message(prefix, exp))
        return f"{self.current_key_id}.{exp}.{depth}.{mac}"

    def token_url(self, base: str, prefix: str, path: str, ttl_seconds: int) -> str:
        """``base/t/<token>/path`` with a token covering ``prefix`` (which ``path`` must lie in)."""
        if not path.startswith(prefix):
            raise ValueError(f"{path!r} lies outside {prefix!r}")
        token = self.make_token(prefix, ttl_seconds)
        return f"{base.rstrip('/')}/{TOKEN_SEGMENT}/{token}/{path}"

    def verify_token_path(self, token: str, path: str, *, now: float | None = None) -> int:
        """Return the token's ``exp`` when it is valid, unexpired and covers ``path``.

        The key check, the sizes and the expiry come first; then one HMAC, over the one prefix
        the token names.
        """
        check_key(path)
        fields = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
        if len(fields) == 4 and _DEPTH.fullmatch(fields[2]) is not None:
            kid, exp_text, depth_text, mac = fields
            depth, legacy = int(depth_text), False
        elif len(fields) == 3:
            kid, exp_text, mac = fields
            depth, legacy = LEGACY_TOKEN_DEPTH, True
        else:
            raise Forbidden("malformed path token")
        exp = self._check_exp(exp_text, now, "token")
        if _MAC.fullmatch(mac) is None or depth >= MAX_KEY_DEPTH:
            raise Forbidden("malformed path token")
        prefix = prefix_at(path, depth)
        if prefix is None:
            raise Forbidden("the path lies outside the token's folder")
        if legacy:
            self._check_legacy()
            message = f"t:{prefix}{exp}"
        else:
            message = token_message(prefix, exp)
        if not self._matches(message, mac, kid):
            raise Forbidden("invalid token")
        return exp

    def _check_exp(self, text: str, now: float | None, what: str) -> int:
        if _EXP.fullmatch(text) is None:
            raise Forbidden(f"malformed {what} expiry: expected a unix timestamp")
        exp = int(text)
        current = int(now if now is not None else time.time())
        if exp < current:
            raise Forbidden(f"{what} expired", expired_at=exp)
        if exp > current + self.max_ttl_seconds + CLOCK_SKEW_SECONDS:
            raise Forbidden(
                f"{what} expiry too far ahead: credentials last at most "
                f"{self.max_ttl_seconds} seconds"
            )
        return exp

    def _check_legacy(self) -> None:
        if not self.accept_legacy:
            raise Forbidden("unversioned credentials are no longer accepted; ask for new URLs")

    def _matches(self, message: str, mac: str, kid: str | None) -> bool:
        if kid is not None:
            secret = self.keys.get(kid)
            if secret is None:
                return False
            candidates = [secret]
        else:
            candidates = list(self.keys.values())
        return any(hmac.compare_digest(_hmac(secret, message), mac) for secret in candidates)


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
        return Grant(key, signer.verify_token_path(token, key, now=now), True)
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
