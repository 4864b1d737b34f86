"""Query signatures (version 2 and the gateway's legacy formula), key rotation, path tokens and
the bound on how far ahead any of them may expire."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from shared.core.errors import BadRequest, Forbidden
from shared.core.signing import (
    CLOCK_SKEW_SECONDS,
    Credentials,
    Signer,
    gateway_signature,
    prefix_at,
    request_key,
    split_token_path,
)

NOW = 1_700_000_000
PATH = "videos/abc/hls/360p/seg_00001.m4s"


def signer(current: str = "k1", **keys: str) -> Signer:
    return Signer(keys or {"k1": "first-secret-0123456789"}, current)


def test_signature_is_version_2_with_separators() -> None:
    signed = signer().sign(PATH, 60, now=NOW)
    expected = hmac.new(
        b"first-secret-0123456789", f"v2\n{PATH}\n{NOW + 60}".encode(), hashlib.sha256
    ).hexdigest()
    assert signed.exp == NOW + 60
    assert signed.sig == f"v2.{expected}"
    assert signed.query() == f"exp={NOW + 60}&sig=v2.{expected}&kid=k1"


def test_gateway_signatures_verify_while_legacy_is_accepted() -> None:
    legacy = gateway_signature("first-secret-0123456789", PATH, NOW + 60)
    assert signer().verify(PATH, NOW + 60, legacy, now=NOW) == NOW + 60
    strict = Signer({"k1": "first-secret-0123456789"}, "k1", accept_legacy=False)
    with pytest.raises(Forbidden, match="unversioned"):
        strict.verify(PATH, NOW + 60, legacy, now=NOW)
    assert strict.verify(PATH, NOW + 60, strict.sign(PATH, 60, now=NOW).sig, now=NOW)


def test_a_resplit_gateway_signature_is_refused_by_the_expiry_bound() -> None:
    """``.../seg_1`` until exp is, to the gateway's formula, ``.../seg_`` until ``1`` + exp."""
    key = "videos/abc/hls/360p/seg_1"
    legacy = gateway_signature("first-secret-0123456789", key, NOW + 60)
    with pytest.raises(Forbidden, match="too far ahead"):
        signer().verify(key[:-1], f"1{NOW + 60}", legacy, now=NOW)
    # Version 2 separates the two: the same move is an invalid signature even within the bound.
    s = Signer({"k1": "first-secret-0123456789"}, "k1", max_ttl_seconds=10**11)
    signed = s.sign(key, 60, now=NOW)
    with pytest.raises(Forbidden, match="invalid"):
        s.verify(key[:-1], f"1{signed.exp}", signed.sig, now=NOW)


def test_far_future_expiries_are_refused_and_never_issued() -> None:
    s = Signer({"k1": "first-secret-0123456789"}, "k1", max_ttl_seconds=3600)
    assert s.sign(PATH, 10**9, now=NOW).exp == NOW + 3600
    ahead = NOW + 3600 + CLOCK_SKEW_SECONDS
    assert s.verify(PATH, ahead, s.sign(PATH, 3600, now=NOW + CLOCK_SKEW_SECONDS).sig, now=NOW)
    with pytest.raises(Forbidden, match="too far ahead"):
        s.verify(PATH, ahead + 1, "0" * 64, now=NOW)
    with pytest.raises(Forbidden, match="too far ahead"):
        s.verify_token_path(f"k1.{ahead + 1}.2.{'0' * 64}", PATH, now=NOW)


def test_signed_url_shape() -> None:
    url = signer().signed_url("http://o:8003/origin/", PATH, 300)
    assert url.startswith(f"http://o:8003/origin/{PATH}?exp=")
    assert "&sig=" in url and url.endswith("&kid=k1")


def test_verify_accepts_until_exp_then_refuses() -> None:
    s = signer()
    signed = s.sign(PATH, 60, now=NOW)
    assert s.verify(PATH, str(signed.exp), signed.sig, "k1", now=NOW + 60) == NOW + 60
    with pytest.raises(Forbidden, match="expired"):
        s.verify(PATH, str(signed.exp), signed.sig, "k1", now=NOW + 61)


@pytest.mark.parametrize(
    ("exp", "sig", "kid", "message"),
    [
        (None, "x", None, "missing"),
        ("", "x", None, "missing"),
        ("soon", "x", None, "malformed"),
        (str(NOW + 60), "0" * 64, None, "invalid"),
        (str(NOW + 61), "VALID", None, "invalid"),
        (str(NOW + 60), "VALID", "k9", "invalid"),
        (f" {NOW + 60}", "VALID", None, "malformed"),
        (f"0{NOW + 60}", "VALID", None, "malformed"),
        ("1_700_000_060", "VALID", None, "malformed"),
    ],
)
def test_verify_refuses(exp: str | None, sig: str, kid: str | None, message: str) -> None:
    s = signer()
    if sig == "VALID":
        sig = s.sign(PATH, 60, now=NOW).sig
    with pytest.raises(Forbidden, match=message):
        s.verify(PATH, exp, sig, kid, now=NOW)


def test_signature_is_bound_to_the_path() -> None:
    s = signer()
    signed = s.sign(PATH, 60, now=NOW)
    with pytest.raises(Forbidden):
        s.verify(PATH.replace("00001", "00002"), signed.exp, signed.sig, now=NOW)


def test_rotation_old_and_new_keys_during_transition_then_old_retired() -> None:
    old = Signer({"k1": "first-secret-0123456789"}, "k1")
    during = Signer({"k1": "first-secret-0123456789", "k2": "second-secret-012345678"}, "k2")
    after = Signer({"k2": "second-secret-012345678"}, "k2")
    from_old = old.sign(PATH, 60, now=NOW)
    from_new = during.sign(PATH, 60, now=NOW)
    assert from_new.kid == "k2"
    assert during.verify(PATH, from_old.exp, from_old.sig, "k1", now=NOW)
    assert during.verify(PATH, from_old.exp, from_old.sig, None, now=NOW)  # no kid: try all
    assert after.verify(PATH, from_new.exp, from_new.sig, "k2", now=NOW)
    with pytest.raises(Forbidden):
        after.verify(PATH, from_old.exp, from_old.sig, "k1", now=NOW)
    with pytest.raises(Forbidden):  # an old signature claiming the new key id
        during.verify(PATH, from_old.exp, from_old.sig, "k2", now=NOW)


def test_current_key_must_exist() -> None:
    with pytest.raises(ValueError):
        Signer({"k1": "first-secret-0123456789"}, "k2")


def test_token_covers_the_prefix_and_nothing_else() -> None:
    s = signer()
    token = s.make_token("videos/abc/", 60, now=NOW)
    kid, exp, depth, mac = token.split(".")
    expected = hmac.new(
        b"first-secret-0123456789", f"v2\nt\nvideos/abc/\n{NOW + 60}".encode(), hashlib.sha256
    )
    assert (kid, exp, depth, mac) == ("k1", str(NOW + 60), "2", expected.hexdigest())
    assert s.verify_token_path(token, PATH, now=NOW) == NOW + 60
    assert s.verify_token_path(token, "videos/abc/hls/master.m3u8", now=NOW + 60)
    for other in ("videos/abd/hls/master.m3u8", "videos/abcd/x", "abc/hls/x"):
        with pytest.raises(Forbidden, match="invalid"):
            s.verify_token_path(token, other, now=NOW)
    with pytest.raises(Forbidden, match="outside"):
        s.verify_token_path(token, "videos/x", now=NOW)
    with pytest.raises(Forbidden, match="expired"):
        s.verify_token_path(token, PATH, now=NOW + 61)
    # Naming another depth names another prefix, which the MAC does not cover.
    with pytest.raises(Forbidden, match="invalid"):
        s.verify_token_path(f"{kid}.{exp}.3.{mac}", PATH, now=NOW)


def test_legacy_tokens_verify_at_the_master_folder_only() -> None:
    secret = "first-secret-0123456789"
    folder = "videos/abc/hls/"
    mac = hmac.new(secret.encode(), f"t:{folder}{NOW + 60}".encode(), hashlib.sha256).hexdigest()
    legacy = f"k1.{NOW + 60}.{mac}"
    assert signer().verify_token_path(legacy, folder + "360p/seg_00001.m4s", now=NOW) == NOW + 60
    strict = Signer({"k1": secret}, "k1", accept_legacy=False)
    with pytest.raises(Forbidden, match="unversioned"):
        strict.verify_token_path(legacy, folder + "360p/seg_00001.m4s", now=NOW)
    shallow = hmac.new(secret.encode(), f"t:videos/abc/{NOW + 60}".encode(), hashlib.sha256)
    with pytest.raises(Forbidden):
        signer().verify_token_path(f"k1.{NOW + 60}.{shallow.hexdigest()}", PATH, now=NOW)


@pytest.mark.parametrize(
    "token",
    ["", "k1", "k1.x.y", "k1.1.2.3", "zz.99999999999.abc", "k1.1.0." + "0" * 64, "k1." * 100],
)
def test_malformed_or_foreign_tokens_are_refused(token: str) -> None:
    with pytest.raises(Forbidden):
        signer().verify_token_path(token, PATH, now=NOW)


def test_token_rotation() -> None:
    old = Signer({"k1": "first-secret-0123456789"}, "k1")
    during = Signer({"k1": "first-secret-0123456789", "k2": "second-secret-012345678"}, "k2")
    token = old.make_token("videos/abc/", 60, now=NOW)
    assert during.verify_token_path(token, PATH, now=NOW) == NOW + 60
    assert during.make_token("videos/abc/", 60, now=NOW).startswith("k2.")


def test_token_url_and_split() -> None:
    url = signer().token_url("http://o/origin", "videos/abc/", "videos/abc/hls/master.m3u8", 60)
    path = url.removeprefix("http://o/origin/")
    parsed = split_token_path(path)
    assert parsed is not None
    token, key = parsed
    assert key == "videos/abc/hls/master.m3u8" and token.startswith("k1.")
    assert split_token_path("videos/abc/x") is None
    assert split_token_path("t/onlytoken") is None
    with pytest.raises(ValueError):
        signer().token_url("http://o/origin", "videos/abc/", "videos/other/x", 60)


def test_prefix_at() -> None:
    assert prefix_at("a/b/c.m4s", 1) == "a/"
    assert prefix_at("a/b/c.m4s", 2) == "a/b/"
    assert prefix_at("a/b/c.m4s", 3) is None
    assert prefix_at("c.m4s", 1) is None


def test_request_key_takes_either_credential_and_checks_the_key() -> None:
    s = signer()
    key = "videos/v/hls/720p/seg_00001.m4s"
    query = s.sign(key, 60).query()
    assert request_key(s, key, query)[::2] == (key, False)
    token = s.make_token("videos/v/", 60)
    assert request_key(s, f"t/{token}/{key}", "")[::2] == (key, True)
    with pytest.raises(BadRequest):
        request_key(s, "t/" + token, "")
    with pytest.raises(BadRequest):
        request_key(s, "videos/v/../secret", query)
    with pytest.raises(Forbidden):
        request_key(s, key, query.replace("sig=", "sig=0"))


def test_credentials_remember_what_verified_until_it_expires() -> None:
    s = signer()
    key = "videos/v/hls/720p/seg_00001.m4s"
    signed = s.sign(key, 60, now=1_000_000)
    creds = Credentials(s, max_entries=2)
    now = signed.exp - 30
    path = f"/origin/{key}"
    first = creds.check(path, signed.query(), now)
    assert first == (key, signed.exp, False)
    # A repeated URL gets the remembered grant back, without verifying again.
    assert creds.check(path, signed.query(), now + 1) is first
    with pytest.raises(Forbidden):
        creds.check(path, signed.query(), signed.exp + 1)
    forged = signed.query().replace("sig=", "sig=f")
    with pytest.raises(Forbidden):
        creds.check(path, forged, now)


def test_credentials_take_either_credential_under_their_prefix_only() -> None:
    s = signer()
    key = "videos/v/hls/720p/seg_00001.m4s"
    creds = Credentials(s, prefix="/cdn/")
    token = s.make_token("videos/v/", 60)
    assert creds.check(f"/cdn/t/{token}/{key}", "", time.time()) == (
        key,
        int(token.split(".")[1]),
        True,
    )
    # The same signature, reached by any other path, is not a request for the object.
    with pytest.raises(BadRequest):
        creds.check(f"/xxxx/{key}", s.sign(key, 60).query(), time.time())


@pytest.mark.parametrize("sig", ["\u00e9", "A" * 64, "0" * 63, "0" * 65, "zz" * 32, "0" * 10_000])
def test_malformed_signatures_are_refused_before_any_hmac(sig: str) -> None:
    s = signer()
    key = "videos/v/hls/720p/seg_00001.m4s"
    with pytest.raises(Forbidden):
        s.verify(key, str(int(time.time()) + 60), sig)
    with pytest.raises(Forbidden):
        s.verify_token_path(f"k1.{int(time.time()) + 60}.{sig}", key)


def test_a_deep_token_path_is_refused_without_trying_its_prefixes() -> None:
    s = signer()
    token = s.make_token("videos/v/", 60)
    deep = "a/" * 30_000 + "x"
    started = time.perf_counter()
    with pytest.raises(BadRequest):
        request_key(s, f"t/{token}/{deep}", "")
    assert time.perf_counter() - started < 0.05
