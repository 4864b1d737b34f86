"""The balancer's own Prometheus metrics (labels: backend names, a short configured list)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.http.metrics import LoopCounter

# Counted per proxied request, so without a lock (the event loop is the only writer).
UPSTREAM_REQUESTS = LoopCounter(
    "balancer_upstream_requests_total",
    "Requests sent to a backend, by backend and outcome (ok, retried, failed).",
    ["backend", "outcome"],
)
FAILURES = Counter(
    "balancer_backend_failures_total",
    "Connect errors, timeouts, 5xx and broken streams, by backend.",
    ["backend"],
)
EJECTIONS = Counter("balancer_backend_ejections_total", "Times a backend was ejected.", ["backend"])
SCORE = Gauge("balancer_backend_score", "Load score 0..100, lower is better.", ["backend"])
TIER = Gauge("balancer_backend_tier", "Tier 1..4 the score puts the backend in.", ["backend"])
UP = Gauge("balancer_backend_up", "1 while taking traffic, 0 while ejected.", ["backend"])
RESPONSE_TIME = Gauge(
    "balancer_backend_response_time_seconds",
    "Peak-EWMA time to response headers, as the balancer measures it.",
    ["backend"],
)
IN_FLIGHT = Gauge(
    "balancer_backend_in_flight_requests", "Requests open on a backend now.", ["backend"]
)
