"""Worker metrics, served on the worker's own /metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter(
    "transcode_jobs_total", "Jobs finished, by worker mode and outcome.", ["mode", "outcome"]
)
QUEUE_WAIT = Histogram(
    "transcode_queue_wait_seconds",
    "Time from a job's publication to a worker starting it.",
    ["mode"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
TRANSCODE_SECONDS = Histogram(
    "transcode_duration_seconds",
    "Wall time of a transcode from start to stored outputs.",
    ["mode"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
)
REALTIME_FACTOR = Histogram(
    "transcode_realtime_factor",
    "Media seconds transcoded per wall second.",
    ["mode"],
    buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 20),
)
BUSY = Gauge("transcode_worker_busy", "1 while the worker runs a job.", ["mode"])
CHANNELS_LOST = Counter(
    "transcode_worker_channels_lost_total",
    "Channels the worker lost (a broker restart, a consumer timeout) and opened again.",
    ["mode"],
)
