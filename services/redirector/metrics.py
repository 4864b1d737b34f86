"""Redirector metrics: redirects by target and the configuration each instance answers with."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.http.metrics import LoopCounter

TO_ORIGIN = ("origin",)
TO_CDN = ("cdn",)
REDIRECTS = LoopCounter(
    "redirector_redirects_total",
    "Redirects answered, by target side (origin or cdn).",
    ["target"],
    keys=(TO_ORIGIN, TO_CDN),
)
REJECTED = Counter(
    "redirector_rejected_total",
    "Redirect requests refused, by error code.",
    ["error"],
)
CONFIG_VERSION = Gauge(
    "redirector_config_version",
    "Version of the configuration in use (0: the environment fallback).",
)
CONFIG_RATIO = Gauge("redirector_config_ratio", "One request in this many goes to the origin.")
CONFIG_FROM_DATABASE = Gauge(
    "redirector_config_from_database",
    "1 when the configuration in use came from the database, 0 for the environment fallback.",
)
LISTENER_UP = Gauge(
    "redirector_config_listener_up",
    "1 while the LISTEN connection to PostgreSQL is open.",
)
CONFIG_RELOADS = Counter(
    "redirector_config_reloads_total",
    "Configuration reads from the database, by outcome.",
    ["outcome"],
)
