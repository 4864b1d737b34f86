"""The pure parts of the upload quotas: the day's end, an upload's bound, the refusals' bodies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.core.settings import BaseServiceSettings
from shared.videos.quotas import (
    CONCURRENT_RETRY_SECONDS,
    Quotas,
    Slot,
    next_midnight,
    over_concurrent_uploads,
    over_stored_bytes,
    over_uploads_per_day,
)


@pytest.mark.parametrize(
    ("now", "midnight"),
    [
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 12, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        # 23:30 at UTC+2 is 21:30 UTC: the UTC day ends at 02:00 local time.
        (
            datetime(2026, 6, 10, 23, 30, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 6, 11, tzinfo=UTC),
        ),
    ],
)
def test_the_day_ends_at_the_next_utc_midnight(now: datetime, midnight: datetime) -> None:
    assert next_midnight(now) == midnight


def test_an_upload_is_bounded_by_the_smaller_of_service_and_quota() -> None:
    owner = uuid.uuid4()
    tight = Slot(owner, "stream:x", room=100, limit=1000, used=900)
    assert tight.max_bytes(5000) == 100 and tight.bounds(5000)
    assert tight.max_bytes(50) == 50 and not tight.bounds(50)
    unlimited = Slot(owner, "stream:x", room=None, limit=0, used=0)
    assert unlimited.max_bytes(5000) == 5000 and not unlimited.bounds(5000)
    body = tight.too_large().body()
    assert body["quota"] == "stored_bytes" and body["limit"] == 1000 and body["used"] == 900


def test_the_refusals_name_their_quota_and_when_it_frees() -> None:
    stored = over_stored_bytes(1000, 900, 200)
    assert stored.status == 413
    assert stored.body() == {
        "error": "payload_too_large",
        "detail": stored.detail,
        "quota": "stored_bytes",
        "limit": 1000,
        "used": 900,
    }
    assert "200 more bytes" in stored.detail and "deleting videos" in stored.detail

    concurrent = over_concurrent_uploads(4)
    assert concurrent.status == 429
    assert concurrent.headers == {"Retry-After": str(CONCURRENT_RETRY_SECONDS)}
    assert concurrent.body()["quota"] == "concurrent_uploads"
    assert concurrent.body()["limit"] == 4

    now = datetime(2026, 5, 4, 23, 0, 30, tzinfo=UTC)
    daily = over_uploads_per_day(100, now)
    assert daily.status == 429
    assert daily.headers == {"Retry-After": "3570"}
    assert daily.body()["quota"] == "uploads_per_day"
    assert daily.body()["resets_at"] == "2026-05-05T00:00:00+00:00"
    assert daily.body()["retry_after_seconds"] == 3570


def test_quotas_come_from_the_settings_and_zero_lifts_one() -> None:
    settings = BaseServiceSettings(
        quota_stored_bytes=0, quota_concurrent_uploads=3, quota_uploads_per_day=7
    )
    assert Quotas.from_settings(settings) == Quotas(0, 3, 7)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        BaseServiceSettings(quota_concurrent_uploads=-1)
