"""Account credentials in-process: access tokens, API keys, password hashes, who may manage what."""

from __future__ import annotations

import uuid

import pytest

from shared.accounts import keys, passwords, tokens
from shared.accounts.repository import check_name
from shared.core.errors import BadRequest, Unauthorized
from shared.core.settings import BaseServiceSettings
from shared.http.auth import (
    MAX_CREDENTIAL_CHARS,
    Principal,
    authenticate,
    bearer_token,
    may_manage,
)
from shared.runtime.resources import Resources

SECRET = "unit-test-auth-token-secret-0123456789"
USER = uuid.UUID("6f1c1d2e-8a7b-4c3d-9e0f-112233445566")


def test_a_token_names_its_user_until_it_expires() -> None:
    token = tokens.new_token(SECRET, USER, 60, now=1_000)
    assert tokens.verify_token(SECRET, token, now=1_059) == USER
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify_token(SECRET, token, now=1_061)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace(USER.hex, uuid.uuid4().hex),  # another user
        lambda t: t.replace(".1060.", ".9999999999."),  # a later expiry
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # a changed MAC
        lambda t: "at2" + t[3:],  # another version
        lambda t: t.rsplit(".", 1)[0],  # no MAC
        lambda t: t + ".x",  # a part too many
        lambda t: t.replace(USER.hex, "not-a-uuid"),
        lambda t: t[:-2] + "é",  # not ASCII: refused, not a crash
    ],
)
def test_a_changed_token_is_refused(change: object) -> None:
    token = tokens.new_token(SECRET, USER, 60, now=1_000)
    assert callable(change)
    with pytest.raises(Unauthorized) as refused:
        tokens.verify_token(SECRET, change(token), now=1_000)
    assert refused.value.status == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_of_another_secret_is_refused() -> None:
    token = tokens.new_token(SECRET, USER, 60)
    with pytest.raises(Unauthorized):
        tokens.verify_token(SECRET + "x", token)


def test_an_api_key_is_random_and_only_its_hash_is_stored() -> None:
    first, second = keys.new_key(), keys.new_key()
    assert first.plaintext != second.plaintext and first.prefix != second.prefix
    assert keys.is_api_key(first.plaintext)
    prefix, secret = keys.split_key(first.plaintext) or ("", "")
    assert prefix == first.prefix
    assert len(secret) == 43  # 32 random bytes
    assert secret not in first.secret_hash and len(first.secret_hash) == 64
    assert keys.secret_matches(secret, first.secret_hash)
    assert not keys.secret_matches(secret, second.secret_hash)


@pytest.mark.parametrize(
    "credential",
    [
        "vsp_",
        "vsp_0123_abc",
        "vsp_" + "g" * 16 + "_" + "a" * 43,
        "vsp_" + "a" * 16 + "_" + "a" * 44,
    ],
)
def test_a_malformed_api_key_does_not_parse(credential: str) -> None:
    assert keys.split_key(credential) is None


async def test_passwords_are_argon2id_hashes_that_verify() -> None:
    stored = await passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert await passwords.verify_password(stored, "correct horse battery")
    assert not await passwords.verify_password(stored, "correct horse battery!")
    assert not await passwords.verify_password("not a hash", "correct horse battery")
    # An unknown account: the same work, never a match.
    assert not await passwords.verify_password(None, "no account has this password")
    assert not passwords.needs_rehash(stored)


@pytest.mark.parametrize("password", ["short", "x" * (passwords.MAX_PASSWORD_CHARS + 1)])
def test_password_length_is_bounded(password: str) -> None:
    with pytest.raises(BadRequest):
        passwords.hash_password_sync(password)


@pytest.mark.parametrize("name", ["ab", "A-channel", "white space", "x" * 33, "dot.name", ""])
def test_account_names_are_channel_names(name: str) -> None:
    with pytest.raises(BadRequest):
        check_name(name)
    check_name("my-channel_01")


def test_owners_and_admins_may_manage() -> None:
    owner = Principal(USER, "owner", "uploader")
    other = Principal(uuid.uuid4(), "other", "uploader")
    admin = Principal(uuid.uuid4(), "root", "admin")
    assert may_manage(owner, USER)
    assert not may_manage(other, USER)
    assert may_manage(admin, USER) and admin.is_admin and not owner.is_admin
    assert not may_manage(None, USER)
    # Videos made before accounts belong to nobody: only admins manage them.
    assert not may_manage(owner, None)
    assert may_manage(admin, None)


def test_bearer_credentials_are_read_from_the_header() -> None:
    assert bearer_token("Bearer vsp_x") == "vsp_x"
    assert bearer_token("bearer  at1.y ") == "at1.y"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


async def test_an_overlong_credential_is_refused_before_any_lookup() -> None:
    # A process without a database: reaching for it would raise RuntimeError, not 401.
    res = Resources(BaseServiceSettings())
    with pytest.raises(Unauthorized):
        await authenticate(res, "Bearer vsp_" + "a" * MAX_CREDENTIAL_CHARS)
    assert await authenticate(res, None) is None
    assert await authenticate(res, "Basic dXNlcjpwYXNz") is None
