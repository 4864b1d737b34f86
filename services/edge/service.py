"""Edge use cases: look up, fill (coalesced), revalidate, serve stale, prefetch, warm and purge.

The edge fetches from the origin with a URL it signs itself (it holds the signing keys), never
with the viewer's: a fill is shared by every viewer waiting on it, prefetch and warming have no
viewer at all, and a viewer's token must not decide what the cache stores.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from services.edge import metrics
from services.edge.freshness import Policy, policy_for
from services.edge.settings import Settings
from services.edge.store import DiskStore, Entry, MemoryTier, NegativeCache
from shared.core.errors import (
    AppError,
    GatewayTimeout,
    NotFound,
    RangeNotSatisfiable,
    UpstreamUnavailable,
)
from shared.core.signing import Signer
from shared.media import hls

log = logging.getLogger(__name__)

HIT, MISS, STALE, COALESCED, REVALIDATED = "HIT", "MISS", "STALE", "COALESCED", "REVALIDATED"
# What viewers read when the origin fails them; the details go to metrics and the log.
_NOT_AT_ORIGIN = "no such object at the origin"
_TIMEOUT = "the origin did not answer in time"
_UNREACHABLE = "the origin is unreachable and no cached copy can be served"
_NEXT_SEGMENT = re.compile(r"^(.*?)(\d+)(\.(?:m4s|ts))$")


class TooLarge(Exception):
    """The object exceeds what the edge stores; it is relayed instead."""


class KnownMissing(NotFound):
    """The origin answered 404 for the key moments ago; it is not asked again yet."""


@dataclass(frozen=True)
class Served:
    """What to answer a viewer with; ``body`` is None when it must be read from disk."""

    entry: Entry
    body: bytes | None
    result: str


def next_segment_key(key: str) -> str | None:
    """``.../seg_00008.m4s`` for ``.../seg_00007.m4s``; None for keys that are not segments."""
    match = _NEXT_SEGMENT.match(key)
    if match is None:
        return None
    head, number, ext = match.groups()
    return f"{head}{int(number) + 1:0{len(number)}d}{ext}"


class Edge:
    """One edge's cache, its origin client and the fills in flight."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, signer: Signer) -> None:
        self.settings = settings
        self.edge_id = settings.edge_id or f"edge-{settings.edge_port}"
        self.http = http
        self.signer = signer
        self.origin = settings.edge_origin_url.rstrip("/")
        self.disk = DiskStore(settings.edge_cache_dir, settings.edge_cache_max_bytes)
        self.memory = MemoryTier(
            settings.edge_memory_max_bytes, settings.edge_memory_max_object_bytes
        )
        self.missing = NegativeCache(
            settings.edge_negative_ttl_seconds, settings.edge_negative_max_entries
        )
        self.timeout = httpx.Timeout(
            settings.edge_origin_timeout_seconds,
            connect=settings.edge_origin_connect_timeout_seconds,
        )
        self._inflight: dict[str, asyncio.Task[Served]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.disk.load()

    async def stop(self) -> None:
        tasks = list(self._background) + list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- lookups -------------------------------------------------------------------------------

    async def get(self, key: str) -> Served:
        """The object for a viewer: from cache when usable, else from one shared origin fetch."""
        now = time.time()
        entry = self.disk.get(key)
        if entry is not None:
            if entry.source != "viewer":
                # A viewer reached a prefetched segment: keep one segment ahead of them.
                if entry.source == "prefetch":
                    self._prefetch_after(key)
                self._count_first_use(entry)
            if entry.fresh(now):
                return Served(entry, self.memory.get(key), HIT)
            if entry.within_swr(now):
                self._spawn_fill(key, entry, "revalidate")
                return Served(entry, self.memory.get(key), STALE)
        elif self.missing.missing(key, time.monotonic()):
            raise KnownMissing(_NOT_AT_ORIGIN)
        task = self._inflight.get(key)
        joined = task is not None
        if task is None:
            task = self._spawn_fill(key, entry, "fill" if entry is None else "revalidate")
        try:
            served = await asyncio.shield(task)
        except UpstreamUnavailable:
            if entry is not None and entry.within_sie(time.time()):
                return Served(entry, self.memory.get(key), STALE)
            raise
        if served.result == MISS and served.entry.source == "viewer" and not joined:
            self._prefetch_after(key)
        if joined and served.result in (MISS, REVALIDATED):
            return replace(served, result=COALESCED)
        return served

    async def hot_body(self, served: Served) -> bytes | None:
        """The whole body from memory, promoted from disk when it fits the memory tier; None
        when the object is read from its file instead."""
        if served.body is not None:
            return served.body
        key = served.entry.key
        cached = self.memory.get(key)
        if cached is not None:
            return cached
        if served.entry.size <= self.memory.max_object_bytes:
            whole = await asyncio.to_thread(self.disk.read, key, 0, served.entry.size - 1)
            self.memory.put(key, whole)
            return whole
        return None

    async def body(self, served: Served, start: int, end: int) -> bytes:
        """Bytes ``start..end`` (inclusive) of a served object, promoting hot ones to memory."""
        whole = await self.hot_body(served)
        if whole is None:
            return await asyncio.to_thread(self.disk.read, served.entry.key, start, end)
        return whole if start == 0 and end == len(whole) - 1 else whole[start : end + 1]

    def _count_first_use(self, entry: Entry) -> None:
        (metrics.PREFETCH_USED if entry.source == "prefetch" else metrics.WARM_USED).inc()
        entry.source = "viewer"

    # -- origin fetches ------------------------------------------------------------------------

    def _spawn_fill(self, key: str, old: Entry | None, reason: str) -> asyncio.Task[Served]:
        task = self._inflight.get(key)
        if task is not None:
            return task
        task = asyncio.get_running_loop().create_task(self._fill(key, old, reason))
        self._inflight[key] = task

        def done(finished: asyncio.Task[Served]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]
            # Mark the outcome retrieved: waiters may all have gone away.
            if not finished.cancelled():
                finished.exception()

        task.add_done_callback(done)
        return task

    def origin_url(self, key: str, *, signed_playlist: bool = False) -> str:
        """The edge's own signed URL of ``key`` at the origin.

        Playlists are asked for with a path token over their folder, so the origin answers
        with the playlist as stored (relative child URIs, public): one cached copy then serves
        every path-token viewer, whatever their token. ``signed_playlist`` asks instead for the
        origin's per-viewer copy, every child URI query-signed, which is never cached.
        """
        ttl = self.settings.edge_origin_signature_ttl_seconds
        if key.endswith(".m3u8") and not signed_playlist:
            folder = key.rsplit("/", 1)[0] + "/"
            return self.signer.token_url(f"{self.origin}/origin", folder, key, ttl)
        return f"{self.origin}/origin/{key}?{self.signer.sign(key, ttl).query()}"

    async def _fill(self, key: str, old: Entry | None, reason: str) -> Served:
        headers = {"Accept-Encoding": "identity"}
        if old is not None and old.etag:
            headers["If-None-Match"] = old.etag
        started = time.perf_counter()
        outcome = "error"
        try:
            async with self.http.stream(
                "GET", self.origin_url(key), headers=headers, timeout=self.timeout
            ) as response:
                outcome = str(response.status_code)
                if response.status_code == 304 and old is not None:
                    return await self._refreshed(old, response)
                if response.status_code == 404:
                    await self._gone(key, old)
                if response.status_code != 200:
                    raise await _origin_error(key, response)
                length = int(response.headers.get("content-length") or 0)
                if length > self.settings.edge_cache_max_object_bytes:
                    outcome = "too_large"
                    raise TooLarge(key)
                chunks: list[bytes] = []
                received = 0
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > self.settings.edge_cache_max_object_bytes:
                        outcome = "too_large"
                        raise TooLarge(key)
                    chunks.append(chunk)
                body = b"".join(chunks)
        except httpx.TimeoutException:
            outcome = "timeout"
            raise GatewayTimeout(_TIMEOUT) from None
        except httpx.TransportError:
            outcome = "unreachable"
            raise UpstreamUnavailable(_UNREACHABLE) from None
        finally:
            metrics.ORIGIN_FETCHES.labels(reason, outcome).inc()
            metrics.ORIGIN_FETCH_SECONDS.labels(reason).observe(time.perf_counter() - started)
        policy = self._policy(response.headers.get("cache-control"))
        entry = self._entry(key, response, len(body), reason, policy)
        if policy.storable and await self.disk.put(entry, body):
            self.memory.put(key, body)
        elif old is not None:
            await self.disk.remove([key])
            self.memory.drop(key)
        return Served(entry, body, MISS)

    async def _gone(self, key: str, old: Entry | None) -> None:
        """The origin has no ``key``: remember that for a moment, and drop any stale copy."""
        self.missing.remember(key, time.monotonic())
        if old is not None:
            await self.disk.remove([key])
            self.memory.drop(key)

    def _policy(self, cache_control: str | None) -> Policy:
        return policy_for(
            cache_control,
            max_ttl_seconds=self.settings.edge_max_ttl_seconds,
            default_swr_seconds=self.settings.edge_stale_while_revalidate_seconds,
            default_sie_seconds=self.settings.edge_stale_if_error_seconds,
        )

    def _entry(
        self, key: str, response: httpx.Response, size: int, reason: str, policy: Policy
    ) -> Entry:
        return Entry(
            key=key,
            size=size,
            content_type=response.headers.get("content-type", "application/octet-stream"),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            cache_control=response.headers.get("cache-control"),
            received_at=time.time(),
            origin_age=_age(response),
            ttl_seconds=policy.ttl_seconds,
            swr_seconds=policy.stale_while_revalidate_seconds,
            sie_seconds=policy.stale_if_error_seconds,
            source={"prefetch": "prefetch", "warm": "warm"}.get(reason, "viewer"),
        )

    async def _refreshed(self, old: Entry, response: httpx.Response) -> Served:
        """A 304 from the origin: the stored body stays, its freshness starts over."""
        cache_control = response.headers.get("cache-control", old.cache_control)
        policy = self._policy(cache_control)
        old.cache_control = cache_control
        old.received_at = time.time()
        old.origin_age = _age(response)
        old.ttl_seconds = policy.ttl_seconds
        old.swr_seconds = policy.stale_while_revalidate_seconds
        old.sie_seconds = policy.stale_if_error_seconds
        await self.disk.update(old)
        return Served(old, self.memory.get(old.key), REVALIDATED)

    async def relay(
        self, key: str, range_header: str | None, *, signed_playlist: bool = False
    ) -> tuple[httpx.Response, Callable[[], Awaitable[None]]]:
        """An open streaming origin response for an object the edge does not store (too big,
        or a ``signed_playlist``), and its closer."""
        headers = {"Accept-Encoding": "identity"}
        if range_header:
            headers["Range"] = range_header
        url = self.origin_url(key, signed_playlist=signed_playlist)
        request = self.http.build_request("GET", url, headers=headers)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.TimeoutException:
            raise GatewayTimeout(_TIMEOUT) from None
        except httpx.TransportError:
            raise UpstreamUnavailable(_UNREACHABLE) from None
        metrics.ORIGIN_FETCHES.labels("relay", str(response.status_code)).inc()
        if response.status_code not in (200, 206):
            error = await _origin_error(key, response)
            await response.aclose()
            raise error
        return response, response.aclose

    # -- prefetch, warming, purge ----------------------------------------------------------------

    def _prefetch_after(self, key: str) -> None:
        if not self.settings.edge_prefetch_next_segment:
            return
        following = next_segment_key(key)
        if following is None:
            return
        if self.disk.get(following) is not None or following in self._inflight:
            metrics.PREFETCH.labels("already_cached").inc()
            return
        if self.missing.missing(following, time.monotonic()):
            metrics.PREFETCH.labels("not_found").inc()
            return
        task = self._spawn_fill(following, None, "prefetch")
        self._track(self._settle(task, metrics.PREFETCH))

    async def _settle(self, task: asyncio.Task[Served], counter: Any) -> None:
        try:
            await task
            counter.labels("stored").inc()
        except NotFound:
            counter.labels("not_found").inc()
        except (AppError, TooLarge):
            counter.labels("error").inc()

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def warm(self, master_key: str) -> int:
        """Fetch a ready video's playlists, then its init segments and first segments."""
        started = time.perf_counter()
        wanted: list[str] = []
        master = await self._playlist(master_key)
        for uri in hls.referenced_uris(master):
            if hls.is_absolute(uri):
                continue
            variant_key = hls.resolve(master_key, uri)
            if not variant_key.endswith(".m3u8"):
                continue
            variant = await self._playlist(variant_key)
            if "#EXT-X-I-FRAMES-ONLY" in variant:
                continue  # trick play is fetched when a player scrubs, by byte range
            uris = [u for u in hls.referenced_uris(variant) if not hls.is_absolute(u)]
            inits = [u for u in uris if not u.split("?", 1)[0].endswith(".m4s")]
            segments = [u for u in uris if u.split("?", 1)[0].endswith(".m4s")]
            for u in inits + segments[: self.settings.edge_warm_segments]:
                wanted.append(hls.resolve(variant_key, u))
        stored = 0
        for key in dict.fromkeys(wanted):
            if self.disk.get(key) is not None:
                metrics.WARM_OBJECTS.labels("already_cached").inc()
                continue
            try:
                await self._spawn_fill(key, None, "warm")
                metrics.WARM_OBJECTS.labels("stored").inc()
                stored += 1
            except (AppError, TooLarge):
                metrics.WARM_OBJECTS.labels("error").inc()
        metrics.WARM_SECONDS.observe(time.perf_counter() - started)
        return stored

    async def _playlist(self, key: str) -> str:
        served = await self.get(key)
        return (await self.body(served, 0, served.entry.size - 1)).decode()

    async def purge(self, paths: list[str], prefixes: list[str]) -> int:
        """Remove objects by exact path and by path prefix; returns how many were cached.

        Fills of such objects still running are waited for and what they stored is removed
        too: a copy fetched just before the origin deleted the object must not outlive the purge.
        """
        removed = await self._drop(paths, prefixes)
        filling = [
            task
            for key, task in self._inflight.items()
            if key in paths or key.startswith(tuple(prefixes))
        ]
        if filling:
            await asyncio.gather(*filling, return_exceptions=True)
            removed += await self._drop(paths, prefixes)
        metrics.PURGED.inc(removed)
        return removed

    async def _drop(self, paths: list[str], prefixes: list[str]) -> int:
        keys = set(paths)
        for prefix in prefixes:
            keys.update(k for k in self.disk.keys() if k.startswith(prefix))
            self.missing.forget([k for k in self.missing.keys() if k.startswith(prefix)])
        self.missing.forget(paths)
        for key in keys:
            self.memory.drop(key)
        return await self.disk.remove(sorted(keys))


def _age(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("age") or 0))
    except ValueError:
        return 0.0


async def _origin_error(key: str, response: httpx.Response) -> AppError:
    """The viewer's error for an origin answer other than 200 or 304; what only operators need
    to know goes to the log."""
    await response.aread()
    status = response.status_code
    if status == 404:
        return NotFound(_NOT_AT_ORIGIN)
    if status == 416:
        return RangeNotSatisfiable(
            "range outside the object",
            headers={"Content-Range": response.headers.get("content-range", "bytes */0")},
        )
    if status in (401, 403):
        log.error("the origin refused the edge's signature (%d): are the keys the same?", status)
    else:
        log.warning("the origin answered %d for %s", status, key)
    return UpstreamUnavailable("the origin could not serve the object")
