"""Edge metrics: results, bytes, hit ratio, origin fetches, cache size, prefetch and warming."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Counter, Gauge, Histogram

from shared.http.metrics import HTTP_DURATION, HTTP_IN_PROGRESS, HTTP_REQUESTS

# "negative": a 404 answered from the edge's memory of keys the origin does not have.
RESULTS = (
    "hit",
    "miss",
    "stale",
    "coalesced",
    "revalidated",
    "pass",
    "denied",
    "error",
    "negative",
)
# Results served without fetching the body from the origin for this request.
_SERVED_FROM_CACHE = ("hit", "stale", "coalesced", "revalidated")

REQUESTS = Counter(
    "edge_requests_total", "Object requests by cache result (X-Cache, lower-cased).", ["result"]
)
SERVED_BYTES = Counter(
    "edge_served_bytes_total", "Object body bytes sent to viewers, by cache result.", ["result"]
)
ORIGIN_FETCHES = Counter(
    "edge_origin_fetches_total",
    "Requests the edge made to the origin, by reason and outcome.",
    ["reason", "outcome"],
)
ORIGIN_FETCH_SECONDS = Histogram(
    "edge_origin_fetch_seconds",
    "Time to fetch one object (or revalidate it) from the origin.",
    ["reason"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE_BYTES = Gauge("edge_cache_bytes", "Bytes held by each cache tier.", ["tier"])
CACHE_CAPACITY_BYTES = Gauge("edge_cache_capacity_bytes", "Size cap of each cache tier.", ["tier"])
CACHE_OBJECTS = Gauge("edge_cache_objects", "Objects held by each cache tier.", ["tier"])
EVICTIONS = Counter("edge_cache_evictions_total", "Objects evicted to stay under a cap.", ["tier"])
PURGED = Counter(
    "edge_cache_purged_total", "Objects removed by the purge API and by deletions of videos."
)
PREFETCH = Counter(
    "edge_prefetch_total", "Next-segment prefetches after a segment miss, by outcome.", ["outcome"]
)
PREFETCH_USED = Counter(
    "edge_prefetch_used_total", "Prefetched objects later requested by a viewer (first use)."
)
WARM_OBJECTS = Counter(
    "edge_warm_objects_total", "Objects fetched on video.ready events, by outcome.", ["outcome"]
)
WARM_USED = Counter(
    "edge_warm_used_total", "Warmed objects later requested by a viewer (first use)."
)
WARM_SECONDS = Histogram(
    "edge_warm_seconds",
    "Time to warm one ready video.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class Tally:
    """Per-request counts of the object route, kept as plain numbers and folded into the
    Prometheus metrics when they are read.

    Each prometheus_client update takes a lock and a label lookup; at tens of thousands of cache
    hits a second those updates cost a measurable share of the hot path, a dictionary increment
    a small fraction of it. Readers call ``fold`` first (the edge does before every request that
    is not an object, ``/metrics`` included), so a scrape always sees every finished request.
    """

    route = "/origin/{path:path}"
    # Durations are folded early past this many, so an edge nobody scrapes stays small.
    max_pending = 10_000

    def __init__(self) -> None:
        self.in_progress = 0
        self.statuses: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.results: defaultdict[str, int] = defaultdict(int)
        self.served_bytes: defaultdict[str, int] = defaultdict(int)
        self.durations: defaultdict[str, list[float]] = defaultdict(list)
        self.pending = 0

    def request(self, method: str, status: int, seconds: float) -> None:
        """One finished object request."""
        self.statuses[method, status] += 1
        self.durations[method].append(seconds)
        self.pending += 1
        if self.pending >= self.max_pending:
            self.fold()

    def fold(self) -> None:
        """Move the counts into the Prometheus metrics and start over."""
        statuses, self.statuses = self.statuses, defaultdict(int)
        results, self.results = self.results, defaultdict(int)
        served, self.served_bytes = self.served_bytes, defaultdict(int)
        durations, self.durations = self.durations, defaultdict(list)
        self.pending = 0
        for (method, status), count in statuses.items():
            HTTP_REQUESTS.labels(method, self.route, str(status)).inc(count)
        for method, seconds in durations.items():
            histogram = HTTP_DURATION.labels(method, self.route)
            for value in seconds:
                histogram.observe(value)
        for result, count in results.items():
            REQUESTS.labels(result).inc(count)
        for result, count in served.items():
            SERVED_BYTES.labels(result).inc(count)
        HTTP_IN_PROGRESS.labels(self.route).set(self.in_progress)


TALLY = Tally()


def hit_ratio() -> float:
    """Share of cache lookups answered without an origin body fetch, since the process started."""
    TALLY.fold()
    counts = {r: REQUESTS.labels(r)._value.get() for r in RESULTS}
    served = sum(counts[r] for r in _SERVED_FROM_CACHE)
    total = served + counts["miss"] + counts["pass"]
    return served / total if total else 0.0


HIT_RATIO = Gauge(
    "edge_cache_hit_ratio",
    "Share of lookups served from cache (hit, stale, coalesced, revalidated).",
)
HIT_RATIO.set_function(hit_ratio)
