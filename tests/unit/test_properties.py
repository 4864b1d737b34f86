"""Properties, checked on generated inputs: signatures, the key check and the Range parser.

- A signature verifies for exactly the (path, exp) it was made for: any other path, expiry or
  signature is refused, and a version 2 signature cannot be re-split the way the gateway's can.
- ``check_key`` accepts exactly the canonical keys (written out again below, independently) and
  refuses everything else with BadRequest, never another exception.
- ``parse_range`` and ``evaluate`` raise nothing but RangeNotSatisfiable, and every range they
  return lies within the object.

Examples are bounded so the module runs in a few seconds.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.errors import BadRequest, Forbidden, RangeNotSatisfiable
from shared.core.keys import MAX_COMPONENT_BYTES, MAX_KEY_BYTES, MAX_KEY_DEPTH, check_key
from shared.core.signing import Signer, gateway_signature, query_message
from shared.http.ranges import evaluate, parse_range

NOW = 1_700_000_000
MAX_TTL = 86_400
SECRET = "property-secret-0123456789"
SIGNER = Signer({"k1": SECRET, "k0": "older-secret-0123456789"}, "k1", max_ttl_seconds=MAX_TTL)
BOUNDED = settings(max_examples=200, deadline=timedelta(milliseconds=500))

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
NAME_CHARS = ALNUM + "._-"
components = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda c: c not in (".", ".."))
first_components = st.builds(
    lambda head, tail: head + tail, st.sampled_from(ALNUM), st.text(NAME_CHARS, max_size=11)
)
keys = st.builds(
    lambda first, rest: "/".join([first, *rest]),
    first_components,
    st.lists(components, max_size=6),
)
lives = st.integers(min_value=0, max_value=MAX_TTL)
# Text a request could carry as a path: mostly the characters keys are made of, and others.
hostile_text = st.text(
    st.sampled_from([*NAME_CHARS[-8:], *"/./..aZ09-_", "é", "\n", "\x00", " ", "%", "\\"])
    | st.characters(),
    max_size=60,
) | st.builds(
    lambda part, n: part * n, st.sampled_from(["a/", "a", "../", "/"]), st.integers(1, 700)
)


def canonical(key: str) -> bool:
    """What a canonical key is, written out without a regular expression."""
    parts = key.split("/")
    return (
        0 < len(key) <= MAX_KEY_BYTES
        and len(parts) <= MAX_KEY_DEPTH
        and key[0] in ALNUM
        and all(0 < len(part) <= MAX_COMPONENT_BYTES for part in parts)
        and all(char in NAME_CHARS for char in key.replace("/", ""))
        and not any(part in (".", "..") for part in parts)
    )


# Signatures.


@BOUNDED
@given(key=keys, life=lives)
def test_a_signature_verifies_for_what_it_signed(key: str, life: int) -> None:
    signed = SIGNER.sign(key, life, now=NOW)
    assert signed.exp == NOW + life
    assert SIGNER.verify(key, str(signed.exp), signed.sig, signed.kid, now=NOW) == signed.exp
    assert SIGNER.verify(key, signed.exp, signed.sig, None, now=NOW + life) == signed.exp


@BOUNDED
@given(key=keys, life=lives, data=st.data())
def test_any_change_to_the_path_the_expiry_or_the_signature_is_refused(
    key: str, life: int, data: st.DataObject
) -> None:
    signed = SIGNER.sign(key, life, now=NOW)
    path, exp, sig = key, str(signed.exp), signed.sig
    changed = data.draw(st.sampled_from(["path", "exp", "sig", "version", "kid"]))
    kid: str | None = signed.kid
    if changed == "path":
        path = data.draw(keys.filter(lambda other: other != key))
    elif changed == "exp":
        exp = str(data.draw(st.integers(NOW, NOW + MAX_TTL).filter(lambda e: e != signed.exp)))
    elif changed == "sig":
        at = data.draw(st.integers(len("v2."), len(sig) - 1))
        digit = data.draw(st.sampled_from("0123456789abcdef").filter(lambda d: d != sig[at]))
        sig = sig[:at] + digit + sig[at + 1 :]
    elif changed == "version":
        sig = sig.removeprefix("v2.")  # read as the gateway's formula
    else:
        kid = "k0"
    with pytest.raises(Forbidden):
        SIGNER.verify(path, exp, sig, kid, now=NOW)


@BOUNDED
@given(stem=keys, digits=st.integers(1, 999_999).map(str), life=lives)
def test_a_version_2_message_cannot_be_resplit(stem: str, digits: str, life: int) -> None:
    """Moving the digits that end a key into the expiry changes the signed message; in the
    gateway's formula it does not."""
    key, exp = stem + digits, NOW + life
    for moved in range(1, len(digits) + 1):
        if key[-moved] == "0":
            continue  # a leading zero is no digit of the expiry: nothing moves
        shorter, longer_exp = key[:-moved], int(key[-moved:] + str(exp))
        assert query_message(shorter, longer_exp) != query_message(key, exp)
        assert gateway_signature(SECRET, shorter, longer_exp) == gateway_signature(SECRET, key, exp)


@BOUNDED
@given(stem=keys, digits=st.integers(1, 99).map(str), life=lives)
def test_a_resplit_signature_is_refused_even_without_the_expiry_bound(
    stem: str, digits: str, life: int
) -> None:
    unbounded = Signer({"k1": SECRET}, "k1", max_ttl_seconds=10**12)
    key = stem + digits
    signed = unbounded.sign(key, life, now=NOW)
    legacy = gateway_signature(SECRET, key, signed.exp)
    for moved in range(1, len(digits) + 1):
        if key[-moved] == "0":
            continue
        shorter, longer_exp = key[:-moved], key[-moved:] + str(signed.exp)
        with pytest.raises(Forbidden, match="invalid"):
            unbounded.verify(shorter, longer_exp, signed.sig, now=NOW)
        # The gateway's formula is only saved by the bound the platform's signer keeps.
        assert unbounded.verify(shorter, longer_exp, legacy, now=NOW) == int(longer_exp)
        with pytest.raises(Forbidden, match="too far ahead"):
            SIGNER.verify(shorter, longer_exp, legacy, now=NOW)


@BOUNDED
@given(folders=st.lists(components, min_size=1, max_size=4), rest=keys, life=lives)
def test_a_token_opens_its_folder_and_nothing_beside_it(
    folders: list[str], rest: str, life: int
) -> None:
    prefix = "/".join(["v", *folders]) + "/"
    token = SIGNER.make_token(prefix, life, now=NOW)
    assert SIGNER.verify_token_path(token, prefix + rest, now=NOW) == NOW + life
    beside = "/".join(["v", *folders[:-1], folders[-1] + "x"]) + "/" + rest
    with pytest.raises(Forbidden):
        SIGNER.verify_token_path(token, beside, now=NOW)


@BOUNDED
@given(exp=st.text(max_size=20), sig=st.text(max_size=80), token=st.text(max_size=200))
def test_hostile_credentials_are_refused_with_forbidden_only(
    exp: str, sig: str, token: str
) -> None:
    with pytest.raises(Forbidden):
        SIGNER.verify("videos/a/seg_1.m4s", exp, sig, now=NOW)
    with pytest.raises(Forbidden):
        SIGNER.verify_token_path(token, "videos/a/seg_1.m4s", now=NOW)


# The key check.


@BOUNDED
@given(key=keys)
def test_canonical_keys_pass_unchanged(key: str) -> None:
    assert canonical(key)
    assert check_key(key) == key


@BOUNDED
@given(key=hostile_text)
def test_check_key_accepts_exactly_the_canonical_keys(key: str) -> None:
    try:
        check_key(key)
    except BadRequest as refused:
        assert not canonical(key), key
        assert len(refused.detail) < 200  # never echoes a long path back
    else:
        assert canonical(key), key


# The Range parser.


headers = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.builds(
        lambda unit, first, last, space: f"{unit}={space}{first}-{last}{space}",
        st.sampled_from(["bytes", "BYTES", "items", "bytes ", ""]),
        st.one_of(
            st.just(""), st.integers(0, 2**70).map(str), st.sampled_from(["-1", "\u0661", "1_0"])
        ),
        st.one_of(st.just(""), st.integers(0, 2**70).map(str), st.sampled_from([",0-1", " 5"])),
        st.sampled_from(["", " ", "\t"]),
    ),
)
sizes = st.integers(min_value=0, max_value=2**40)


@BOUNDED
@given(header=headers, size=sizes)
def test_parse_range_raises_only_416_and_stays_within_the_object(
    header: str | None, size: int
) -> None:
    try:
        byte_range = parse_range(header, size)
    except RangeNotSatisfiable as refused:
        assert refused.headers == {"Content-Range": f"bytes */{size}"}
        return
    if byte_range is not None:
        assert 0 <= byte_range.start <= byte_range.end < size
        assert byte_range.length == byte_range.end - byte_range.start + 1


@BOUNDED
@given(first=st.integers(0, 10**6), length=st.integers(1, 10**6), size=st.integers(1, 10**6))
def test_a_satisfiable_range_is_the_bytes_asked_for_cut_at_the_end(
    first: int, length: int, size: int
) -> None:
    header = f"bytes={first}-{first + length - 1}"
    if first >= size:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
        return
    byte_range = parse_range(header, size)
    assert byte_range is not None
    assert (byte_range.start, byte_range.end) == (first, min(first + length - 1, size - 1))


@BOUNDED
@given(
    request=st.dictionaries(
        st.sampled_from(["range", "if-range", "if-none-match", "if-modified-since"]),
        st.text(max_size=60) | headers.filter(lambda h: h is not None),
    ),
    size=sizes,
)
def test_evaluate_raises_only_416(request: dict[str, str], size: int) -> None:
    try:
        status, byte_range = evaluate(request, size, '"etag"', "Tue, 01 Oct 2024 10:00:00 GMT")
    except RangeNotSatisfiable:
        return
    assert status in (200, 206, 304)
    assert (byte_range is not None) == (status == 206)
    if byte_range is not None:
        assert 0 <= byte_range.start <= byte_range.end < size
