"""Webhook signatures as sent, checked by the procedure docs/WEBHOOKS.md gives receivers."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid

import httpx
import pytest

from services.origin.webhook_dispatcher import JITTER, retry_delay_seconds
from shared.videos.webhooks import new_secret, signature, signed_headers
from tests.support.webhooks import documented_verify

verify = documented_verify()
BODY = b'{"id":"e1","type":"video.ready","data":{"video":{"id":"v1"}}}'


def test_signature_is_v1_hmac_sha256_of_timestamp_dot_body() -> None:
    secret = new_secret()
    expected = hmac.new(secret.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(secret, 1_700_000_000, BODY) == f"v1={expected}"
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", secret)
    assert new_secret() != secret


def test_the_documented_procedure_accepts_what_is_sent() -> None:
    secret, delivery = new_secret(), uuid.uuid4()
    headers = signed_headers(delivery, secret, BODY, int(time.time()))
    assert headers["Webhook-Id"] == str(delivery)
    # As a receiver's framework hands them over: case-insensitive names.
    received = httpx.Headers({name.lower(): value for name, value in headers.items()})
    assert verify(secret, received, BODY)


@pytest.mark.parametrize(
    "change",
    ["body", "secret", "timestamp", "old", "future", "no signature", "v0", "not digits"],
)
def test_the_documented_procedure_refuses_forgeries_and_replays(change: str) -> None:
    secret, now = new_secret(), int(time.time())
    body, key, stamp = BODY, secret, now
    if change == "old":
        stamp = now - 301
    elif change == "future":
        stamp = now + 301
    headers = signed_headers(uuid.uuid4(), key, body, stamp)
    if change == "body":
        body = BODY.replace(b"v1", b"v2")
    elif change == "secret":
        secret = new_secret()
    elif change == "timestamp":
        headers["Webhook-Timestamp"] = str(now - 1)
    elif change == "no signature":
        del headers["Webhook-Signature"]
    elif change == "v0":
        headers["Webhook-Signature"] = headers["Webhook-Signature"].replace("v1=", "v0=")
    elif change == "not digits":
        headers["Webhook-Timestamp"] = f"{now}.5"
    assert not verify(secret, headers, body)


def test_within_five_minutes_is_fresh() -> None:
    secret = new_secret()
    headers = signed_headers(uuid.uuid4(), secret, BODY, int(time.time()) - 290)
    assert verify(secret, headers, BODY)


def test_retry_delays_follow_the_setting_with_bounded_jitter() -> None:
    delays = [5.0, 30.0, 120.0]
    for attempt, base in [(1, 5.0), (2, 30.0), (3, 120.0), (4, 120.0), (9, 120.0)]:
        waits = [retry_delay_seconds(delays, attempt) for _ in range(200)]
        assert all(base * (1 - JITTER) <= w <= base * (1 + JITTER) for w in waits)
        assert len(set(waits)) > 1  # jittered, not one fixed value
