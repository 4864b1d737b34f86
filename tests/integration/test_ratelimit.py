"""Fixed-window rate limits on the real Redis: counted per subject, shared, expiring, named."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.core.errors import TooManyRequests
from shared.runtime.ratelimit import Limit, RateLimiter
from shared.runtime.resources import Resources


def _limiter(res: Resources) -> RateLimiter:
    return RateLimiter(res.need_redis(), f"t-{uuid.uuid4().hex[:8]}")


async def test_a_subject_is_refused_once_it_spent_its_limit(res: Resources) -> None:
    limiter = _limiter(res)
    limit = Limit("login-name", 3, 60)
    for _ in range(3):
        await limiter.check(limit, "alice", "too many")
        await limiter.record(limit, "alice")
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check(limit, "alice", "too many failed sign-ins")
    body = refused.value.body()
    assert refused.value.status == 429
    assert body["limit"] == "login-name"
    assert 1 <= body["retry_after_seconds"] <= 60
    assert refused.value.headers["Retry-After"] == str(body["retry_after_seconds"])
    assert "at most 3 in 60 s" in body["detail"]
    # Other subjects and other limits count apart.
    await limiter.check(limit, "bob", "too many")
    await limiter.check(Limit("login-address", 3, 60), "alice", "too many")
    # Every limiter on the same Redis and prefix sees the same counts (replicas agree).
    twin = RateLimiter(res.need_redis(), limiter.prefix)
    assert await twin.retry_after(limit, "alice") is not None
    await limiter.reset(limit, "alice")
    assert await twin.retry_after(limit, "alice") is None


async def test_the_window_ends_and_the_subject_may_try_again(res: Resources) -> None:
    limiter = _limiter(res)
    limit = Limit("short", 1, 1)
    await limiter.record(limit, "carol")
    assert await limiter.retry_after(limit, "carol") == 1
    await asyncio.sleep(2.1)
    assert await limiter.retry_after(limit, "carol") is None


async def test_subjects_of_any_size_make_short_keys(res: Resources) -> None:
    limiter = _limiter(res)
    limit = Limit("login-name", 1, 60)
    subject = "é" * 5000
    await limiter.record(limit, subject)
    keys = [key async for key in res.need_redis().scan_iter(f"{limiter.prefix}:*")]
    assert len(keys) == 1 and len(keys[0]) < 100
    assert await limiter.retry_after(limit, subject) is not None
