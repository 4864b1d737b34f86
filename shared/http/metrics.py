"""Process-wide Prometheus metrics shared by every HTTP service.

Labels carry route templates, never raw paths or ids, so cardinality stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric


class LoopCounter:
    """A labelled counter for an event loop's hot path: plain integers, read at scrape time.

    ``prometheus_client``'s counters take a lock per increment (about 0.4 us), a tenth of a
    redirect's whole cost. Only the event loop's thread adds here, so nothing needs a lock;
    ``values`` maps a tuple of label values to its count, and a caller adds with
    ``values[key] += 1`` (keys given in ``keys`` exist from the start).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        keys: Iterable[tuple[str, ...]] = (),
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], int] = dict.fromkeys(keys, 0)
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in list(self.values.items()):
            family.add_metric(list(key), value)
        yield family


HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests handled, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response body.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "Requests currently being served (for media routes: concurrent streams).",
    ["route"],
)
HTTP_RESPONSE_BYTES = Counter(
    "http_response_bytes_total",
    "Response body bytes sent, by route template.",
    ["route"],
)
HTTP_CAPPED_IN_PROGRESS = Gauge(
    "http_capped_requests_in_progress",
    "Requests holding a slot of a per-process concurrency cap, by cap (upload, tus_patch, ...).",
    ["cap"],
)
HTTP_CAPPED_LIMIT = Gauge(
    "http_capped_requests_limit",
    "Slots of each per-process concurrency cap.",
    ["cap"],
)
HTTP_CAPPED_REFUSED = Counter(
    "http_capped_requests_refused_total",
    "Requests answered 503 at once because their concurrency cap was full, by cap.",
    ["cap"],
)
