"""The edge's cache tiers: a size-capped LRU disk store, a smaller LRU of hot bodies in memory,
and a short-lived, bounded memory of the keys the origin does not have.

Every disk object is two files named by the SHA-256 of its key: ``<hash>.body`` and a small JSON
``<hash>.meta``. Both are charged at their size rounded up to the file-system block, so the cap
holds for what the disk really uses, not only for the bytes written. Files are written under a
temporary name and renamed, so a crash never leaves a half-written object behind a valid name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from services.edge import metrics

log = logging.getLogger(__name__)

BLOCK_BYTES = 4096


def charge_of(size: int) -> int:
    """Bytes a file of ``size`` occupies on disk (whole blocks)."""
    return -(-size // BLOCK_BYTES) * BLOCK_BYTES


@dataclass
class Entry:
    """One cached origin response (always a 200) and its freshness."""

    key: str
    size: int
    content_type: str
    etag: str | None
    last_modified: str | None
    cache_control: str | None
    received_at: float  # wall clock, so ages survive a restart
    origin_age: float
    ttl_seconds: float
    swr_seconds: float
    sie_seconds: float
    source: str = "viewer"  # who caused the fetch: viewer, prefetch or warm
    charge: int = 0

    def age(self, now: float) -> float:
        return self.origin_age + max(0.0, now - self.received_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.ttl_seconds

    def within_swr(self, now: float) -> bool:
        return self.age(now) < self.ttl_seconds + self.swr_seconds

    def within_sie(self, now: float) -> bool:
        return self.age(now) < self.ttl_seconds + self.sie_seconds


def read_range(path: Path | str, start: int, end: int) -> bytes:
    """Bytes ``start..end`` (inclusive) of a file; blocking, so callers use a worker thread."""
    with open(path, "rb") as fh:
        return os.pread(fh.fileno(), end - start + 1, start)


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class MemoryTier:
    """Hot bodies kept in memory, least recently used evicted first."""

    def __init__(self, max_bytes: int, max_object_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self.used = 0
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        metrics.CACHE_CAPACITY_BYTES.labels("memory").set(max_bytes)

    def get(self, key: str) -> bytes | None:
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def put(self, key: str, body: bytes) -> None:
        if len(body) > self.max_object_bytes:
            return
        self.drop(key)
        while self._bodies and self.used + len(body) > self.max_bytes:
            _, evicted = self._bodies.popitem(last=False)
            self.used -= len(evicted)
            metrics.EVICTIONS.labels("memory").inc()
        self._bodies[key] = body
        self.used += len(body)
        self._report()

    def drop(self, key: str) -> None:
        body = self._bodies.pop(key, None)
        if body is not None:
            self.used -= len(body)
            self._report()

    def _report(self) -> None:
        metrics.CACHE_BYTES.labels("memory").set(self.used)
        metrics.CACHE_OBJECTS.labels("memory").set(len(self._bodies))


class NegativeCache:
    """Keys the origin answered 404 for, each remembered for ``ttl_seconds``.

    Repeated requests for a missing object are answered here instead of by the origin, and a
    new upload becomes visible once its entry expires. At most ``max_entries`` keys are held,
    the oldest dropped first, so a scan of made-up names costs bounded memory.
    """

    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def remember(self, key: str, now: float) -> None:
        """The origin has no ``key`` at ``now`` (monotonic seconds)."""
        if self.ttl_seconds <= 0 or self.max_entries <= 0:
            return
        self._until.pop(key, None)
        while len(self._until) >= self.max_entries:
            self._until.popitem(last=False)
        self._until[key] = now + self.ttl_seconds

    def missing(self, key: str, now: float) -> bool:
        """Whether ``key`` is still known to be missing at ``now``."""
        until = self._until.get(key)
        if until is None:
            return False
        if until > now:
            return True
        del self._until[key]
        return False

    def forget(self, keys: Iterable[str]) -> None:
        """Drop what is remembered of ``keys``."""
        for key in keys:
            self._until.pop(key, None)

    def keys(self) -> list[str]:
        return list(self._until)


class DiskStore:
    """Objects on disk under a byte cap, with an in-memory LRU index of what is there."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.used = 0  # charged bytes of committed objects
        self.reserved = 0  # charged bytes of objects being written
        self._index: OrderedDict[str, Entry] = OrderedDict()
        self._lock = asyncio.Lock()
        metrics.CACHE_CAPACITY_BYTES.labels("disk").set(max_bytes)

    async def load(self) -> None:
        """Rebuild the index from the files a previous run left, oldest use first."""
        entries = await asyncio.to_thread(self._scan)
        for entry in entries:
            self._index[entry.key] = entry
            self.used += entry.charge
        victims = self._evict_until(0)
        await asyncio.to_thread(self._unlink, victims)
        self._report()
        log.info("edge cache: %d objects, %d bytes on disk", len(self._index), self.used)

    def _scan(self) -> list[Entry]:
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, Entry]] = []
        for path in self.root.iterdir():
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)
            if path.suffix != ".meta":
                continue
            body = path.with_suffix(".body")
            try:
                entry = Entry(**json.loads(path.read_text()))
                stat = body.stat()
                if stat.st_size != entry.size or _name(entry.key) != path.stem:
                    raise ValueError("size or name mismatch")
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                body.unlink(missing_ok=True)
                continue
            entry.charge = charge_of(stat.st_size) + charge_of(path.stat().st_size)
            found.append((stat.st_atime, entry))
        live = {_name(e.key) for _, e in found}
        for path in self.root.glob("*.body"):
            if path.stem not in live:
                path.unlink(missing_ok=True)
        return [e for _, e in sorted(found, key=lambda pair: pair[0])]

    def get(self, key: str) -> Entry | None:
        """The entry for ``key``, marked as just used."""
        entry = self._index.get(key)
        if entry is not None:
            self._index.move_to_end(key)
        return entry

    def keys(self) -> list[str]:
        return list(self._index)

    def body_path(self, key: str) -> Path:
        return self.root / f"{_name(key)}.body"

    async def put(self, entry: Entry, body: bytes) -> bool:
        """Store ``body`` under ``entry.key``, evicting as needed; False when it cannot fit."""
        meta = self._meta_bytes(entry)
        charge = charge_of(len(body)) + charge_of(len(meta))
        if charge > self.max_bytes:
            return False
        async with self._lock:
            await self._drop_files([entry.key])
            victims = self._evict_until(charge)
            self.reserved += charge
        try:
            await asyncio.to_thread(self._unlink, victims)
            await asyncio.to_thread(self._write, entry.key, body, meta)
        except OSError:
            log.exception("could not write %s to the edge cache", entry.key)
            return False
        finally:
            self.reserved -= charge
        entry.charge = charge
        self._index[entry.key] = entry
        self.used += charge
        self._report()
        return True

    async def update(self, entry: Entry) -> None:
        """Rewrite an entry's metadata after a revalidation."""
        if self._index.get(entry.key) is not entry:
            return
        meta = self._meta_bytes(entry)
        try:
            await asyncio.to_thread(self._write_meta, entry.key, meta)
        except OSError:
            log.exception("could not update %s in the edge cache", entry.key)

    async def remove(self, keys: list[str]) -> int:
        """Delete the named objects; returns how many were cached."""
        async with self._lock:
            return await self._drop_files(keys)

    async def _drop_files(self, keys: list[str]) -> int:
        victims = [e for e in (self._index.pop(k, None) for k in keys) if e is not None]
        for entry in victims:
            self.used -= entry.charge
        if victims:
            await asyncio.to_thread(self._unlink, victims)
            self._report()
        return len(victims)

    def read(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive) of a stored body; runs in a worker thread."""
        return read_range(self.body_path(key), start, end)

    def _evict_until(self, incoming: int) -> list[Entry]:
        victims: list[Entry] = []
        while self._index and self.used + self.reserved + incoming > self.max_bytes:
            _, entry = self._index.popitem(last=False)
            self.used -= entry.charge
            victims.append(entry)
        if victims:
            metrics.EVICTIONS.labels("disk").inc(len(victims))
        return victims

    def _meta_bytes(self, entry: Entry) -> bytes:
        return json.dumps(asdict(entry), separators=(",", ":")).encode()

    def _write(self, key: str, body: bytes, meta: bytes) -> None:
        self._replace(key, "body", body)
        self._replace(key, "meta", meta)

    def _write_meta(self, key: str, meta: bytes) -> None:
        self._replace(key, "meta", meta)

    def _replace(self, key: str, suffix: str, data: bytes) -> None:
        """Write ``<hash>.<suffix>`` whole or not at all: a temporary file, then a rename."""
        name = _name(key)
        tmp = self.root / f"{name}.{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.root / f"{name}.{suffix}")
        finally:
            tmp.unlink(missing_ok=True)

    def _unlink(self, entries: list[Entry]) -> None:
        for entry in entries:
            name = _name(entry.key)
            (self.root / f"{name}.meta").unlink(missing_ok=True)
            (self.root / f"{name}.body").unlink(missing_ok=True)

    def _report(self) -> None:
        metrics.CACHE_BYTES.labels("disk").set(self.used)
        metrics.CACHE_OBJECTS.labels("disk").set(len(self._index))
