"""Per-account upload quotas: stored bytes, concurrent uploads, uploads per UTC day.

Both upload services check them, for every account (admins included), before a byte of a
body is read; a setting of 0 lifts its quota.

- Stored bytes: the sources of the account's videos (``VideoRepository.stored_bytes``), its tus
  uploads not yet videos (``UploadRepository.held_bytes``) and the declared lengths of its
  streamed uploads in progress (reserved in Redis). A declared length over what is left is a
  413 naming ``stored_bytes``; an upload of no declared length may send at most what is left
  (``Slot.max_bytes``), and one byte more is the same 413, with what it stored deleted. Room
  comes back as videos are deleted.
- Concurrent uploads: one member per upload in progress in a sorted set per account, scored by
  the time it lapses: a streamed upload's is released when its request ends, however it ends
  (a process that dies lets it lapse after ``STREAM_SLOT_SECONDS``); a tus upload's follows the
  upload's expiry and is released when the upload holds every byte and is finished or refused,
  is terminated, or expires. Over the limit is a 429 naming ``concurrent_uploads``.
- Uploads per day: a counter per account and UTC day, counted when an upload is accepted (every
  other check passed). A tus creation counts, partial uploads included; the final upload of a
  concatenation claims nothing (its partial uploads did). Over the limit is a 429 naming
  ``uploads_per_day`` with ``resets_at``, the next UTC midnight.

One Lua script checks all three and claims, so two requests at once never both take the last
slot; a quota set to 0 keeps nothing in Redis. The rows behind the stored bytes are read just
before it, so tus uploads created at the same instant may pass that quota together by at most
the concurrent quota's worth of declared lengths.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.core.errors import PayloadTooLarge, TooManyRequests
from shared.core.settings import BaseServiceSettings
from shared.db.repositories import VideoRepository
from shared.db.upload_repository import UploadRepository
from shared.runtime.resources import Resources

STORED_BYTES, CONCURRENT_UPLOADS, UPLOADS_PER_DAY = (
    "stored_bytes",
    "concurrent_uploads",
    "uploads_per_day",
)
# A streamed upload's slot lapses this long after it began if its process never released it.
STREAM_SLOT_SECONDS = 24 * 3600
# When to ask a client to try again once its uploads in progress fill its quota.
CONCURRENT_RETRY_SECONDS = 30

# KEYS: slots (sorted set), reserved bytes (hash), today's count.
# ARGV: now, the slot's lapse time, member, stored limit, bytes stored outside Redis, bytes
# needed, bytes to reserve, concurrent limit, daily limit, end of the day (all epoch seconds).
# Returns {outcome, bytes used}: 0 claimed, 1 stored bytes, 2 concurrent uploads, 3 per day.
_CLAIM = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, member in ipairs(stale) do redis.call('HDEL', KEYS[2], member) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local used = tonumber(ARGV[5])
for _, bytes in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(bytes) end
local stored = tonumber(ARGV[4])
if stored > 0 and used + tonumber(ARGV[6]) > stored then return {1, used} end
local concurrent = tonumber(ARGV[8])
if concurrent > 0 and redis.call('ZCARD', KEYS[1]) >= concurrent then return {2, used} end
local daily = tonumber(ARGV[9])
if daily > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= daily then return {3, used} end
local reserve = tonumber(ARGV[7])
if concurrent > 0 or reserve > 0 then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  local last = math.ceil(tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]))
  redis.call('EXPIREAT', KEYS[1], last)
  if reserve > 0 then
    redis.call('HSET', KEYS[2], ARGV[3], reserve)
    redis.call('EXPIREAT', KEYS[2], last)
  end
end
if daily > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIREAT', KEYS[3], ARGV[10])
end
return {0, used}
"""


@dataclass(frozen=True)
class Quotas:
    """Each account's limits; 0 is no limit."""

    stored_bytes: int
    concurrent_uploads: int
    uploads_per_day: int

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> Quotas:
        return cls(
            stored_bytes=settings.quota_stored_bytes,
            concurrent_uploads=settings.quota_concurrent_uploads,
            uploads_per_day=settings.quota_uploads_per_day,
        )


def next_midnight(now: datetime) -> datetime:
    """The next UTC midnight after ``now``, when the uploads of the day count from 0 again."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def over_stored_bytes(limit: int, used: int, wanted: int | None = None) -> PayloadTooLarge:
    """The 413 of an upload that does not fit in what the account may still store."""
    asked = f"{wanted} more bytes" if wanted is not None else "more bytes"
    return PayloadTooLarge(
        f"stored bytes quota: the account stores {used} of its {limit} bytes and the upload "
        f"needs {asked}; deleting videos frees room",
        quota=STORED_BYTES,
        limit=limit,
        used=used,
    )


def over_concurrent_uploads(limit: int) -> TooManyRequests:
    """The 429 of an upload beyond the account's uploads in progress."""
    return TooManyRequests(
        f"concurrent uploads quota: at most {limit} uploads in progress per account; "
        "a slot frees when one of them ends",
        headers={"Retry-After": str(CONCURRENT_RETRY_SECONDS)},
        quota=CONCURRENT_UPLOADS,
        limit=limit,
        retry_after_seconds=CONCURRENT_RETRY_SECONDS,
    )


def over_uploads_per_day(limit: int, now: datetime) -> TooManyRequests:
    """The 429 of an upload beyond the account's uploads of the UTC day."""
    resets_at = next_midnight(now)
    wait = max(int((resets_at - now).total_seconds()), 1)
    return TooManyRequests(
        f"uploads per day quota: at most {limit} uploads per account per UTC day; "
        f"counted again from {resets_at.isoformat()}",
        headers={"Retry-After": str(wait)},
        quota=UPLOADS_PER_DAY,
        limit=limit,
        resets_at=resets_at.isoformat(),
        retry_after_seconds=wait,
    )


@dataclass(frozen=True)
class Slot:
    """An upload in progress that passed every quota; ``room`` is what it may store."""

    owner_id: uuid.UUID
    member: str
    room: int | None  # None: no stored-bytes limit
    limit: int
    used: int

    def max_bytes(self, service_max: int) -> int:
        """The most this upload may send: the service's maximum, or less if the quota is."""
        return service_max if self.room is None else min(service_max, self.room)

    def bounds(self, service_max: int) -> bool:
        """Whether the quota, not the service's maximum, bounds this upload."""
        return self.room is not None and self.room < service_max

    def too_large(self) -> PayloadTooLarge:
        """The 413 of a body that ran past ``room``."""
        return over_stored_bytes(self.limit, self.used)


def _keys(owner_id: uuid.UUID, now: datetime) -> list[str]:
    base = f"vsp:quota:{owner_id}"
    return [f"{base}:uploading", f"{base}:reserved", f"{base}:day:{now.date().isoformat()}"]


async def _stored_elsewhere(res: Resources, owner_id: uuid.UUID, now: datetime) -> int:
    async with res.need_db().session() as session:
        videos = await VideoRepository(session).stored_bytes(owner_id)
        uploads = await UploadRepository(session).held_bytes(owner_id, now)
    return videos + uploads


async def claim(
    res: Resources,
    owner_id: uuid.UUID,
    member: str,
    *,
    lapses_at: datetime,
    needs_bytes: int | None,
    reserve_bytes: int = 0,
) -> Slot:
    """Check every quota for a new upload of ``owner_id`` and take its slot, or raise.

    ``needs_bytes`` is the declared length (None when unknown); ``reserve_bytes`` is what Redis
    keeps counting for the slot until it is released (a streamed upload's declared length; a
    tus upload's bytes are counted from its row instead).
    """
    quotas = Quotas.from_settings(res.settings)
    now = datetime.now(UTC)
    elsewhere = 0 if quotas.stored_bytes == 0 else await _stored_elsewhere(res, owner_id, now)
    outcome, used = await res.need_redis().eval(
        _CLAIM,
        3,
        *_keys(owner_id, now),
        now.timestamp(),
        lapses_at.timestamp(),
        member,
        quotas.stored_bytes,
        elsewhere,
        needs_bytes or 0,
        reserve_bytes if quotas.stored_bytes else 0,
        quotas.concurrent_uploads,
        quotas.uploads_per_day,
        int(next_midnight(now).timestamp()),
    )
    used = int(used)
    if outcome == 1:
        raise over_stored_bytes(quotas.stored_bytes, used, needs_bytes)
    if outcome == 2:
        raise over_concurrent_uploads(quotas.concurrent_uploads)
    if outcome == 3:
        raise over_uploads_per_day(quotas.uploads_per_day, now)
    room = None if quotas.stored_bytes == 0 else quotas.stored_bytes - used
    return Slot(owner_id, member, room, quotas.stored_bytes, used)


async def claim_stream(
    res: Resources, owner_id: uuid.UUID, video_id: uuid.UUID, declared_bytes: int | None
) -> Slot:
    """The slot of a streamed upload, its declared length reserved while it runs."""
    return await claim(
        res,
        owner_id,
        stream_member(video_id),
        lapses_at=datetime.now(UTC) + timedelta(seconds=STREAM_SLOT_SECONDS),
        needs_bytes=declared_bytes,
        reserve_bytes=declared_bytes or 0,
    )


async def room(res: Resources, owner_id: uuid.UUID) -> Slot:
    """What ``owner_id`` may still store, for an upload already in progress (claims nothing)."""
    quotas = Quotas.from_settings(res.settings)
    if quotas.stored_bytes == 0:
        return Slot(owner_id, "", None, 0, 0)
    now = datetime.now(UTC)
    used = await _stored_elsewhere(res, owner_id, now)
    reserved = await res.need_redis().hvals(_keys(owner_id, now)[1])
    used += sum(int(value) for value in reserved)
    return Slot(owner_id, "", max(quotas.stored_bytes - used, 0), quotas.stored_bytes, used)


def stream_member(video_id: uuid.UUID) -> str:
    return f"stream:{video_id}"


def tus_member(upload_id: uuid.UUID) -> str:
    return f"tus:{upload_id}"


async def extend(
    res: Resources, owner_id: uuid.UUID | None, member: str, lapses_at: datetime
) -> None:
    """Move a slot's lapse time (a tus upload written to lives on), if it is still held."""
    if owner_id is None:
        return
    redis = res.need_redis()
    key = _keys(owner_id, lapses_at)[0]
    if await redis.zadd(key, {member: lapses_at.timestamp()}, xx=True, ch=True):
        await redis.expireat(key, lapses_at, gt=True)


async def release(res: Resources, owner_id: uuid.UUID | None, member: str) -> None:
    """Give a slot back (an upload ended), with what it reserved; nothing if not held."""
    if owner_id is None or res.redis is None:
        return
    slots, reserved, _ = _keys(owner_id, datetime.now(UTC))
    async with res.redis.pipeline(transaction=True) as pipe:
        pipe.zrem(slots, member)
        pipe.hdel(reserved, member)
        await pipe.execute()


async def uploads_in_progress(res: Resources, owner_id: uuid.UUID) -> int:
    """How many slots of the concurrent-uploads quota ``owner_id`` holds now."""
    now = datetime.now(UTC)
    return int(await res.need_redis().zcount(_keys(owner_id, now)[0], now.timestamp(), "+inf"))
