"""Writes the Grafana dashboards under ``dashboards/`` from the panel lists below.

Run ``python deploy/grafana/build_dashboards.py`` after changing a panel; the tests check that
the committed JSON matches and that every metric a panel queries is exported by the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
CACHED = "hit|stale|coalesced|revalidated"


def sum_rate(metric: str, by: str = "") -> str:
    """The summed per-second rate of ``metric`` (a name with an optional selector)."""
    inner = f"rate({metric}[{RATE}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    """The share of ``denominator``'s rate that ``numerator``'s makes up."""
    return f"{sum_rate(numerator, by)} / {sum_rate(denominator, by)}"


def quantile(q: str, histogram: str, by: str = "", selector: str = "") -> str:
    """The ``q`` quantile of a histogram's recent observations, per ``by`` group."""
    groups = f"{by}, le" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({groups}) (rate({histogram}_bucket{selector}[{RATE}])))"
    )


def panel(
    title: str,
    *queries: tuple[str, str],
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
    stack: bool = False,
    description: str = "",
) -> dict[str, Any]:
    """A panel of ``kind`` plotting each (PromQL, legend) pair."""
    defaults: dict[str, Any] = {"unit": unit}
    if kind == "timeseries":
        defaults["custom"] = {
            "lineWidth": 1,
            "fillOpacity": 15 if stack else 0,
            "stacking": {"mode": "normal" if stack else "none"},
        }
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": 4 if kind == "stat" else 8},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def row(title: str) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"w": 24, "h": 1},
        "panels": [],
    }


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], tags: list[str]
) -> dict[str, Any]:
    """A dashboard with its panels laid out left to right, top to bottom."""
    x = y = line_height = 0
    for index, item in enumerate(panels, start=1):
        pos = item["gridPos"]
        if x + pos["w"] > 24:
            x, y, line_height = 0, y + line_height, 0
        pos.update(x=x, y=y)
        x += pos["w"]
        line_height = max(line_height, pos["h"])
        item["id"] = index
    return {
        "uid": uid,
        "title": title,
        "tags": ["vsp", *tags],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["vsp"], "asDropdown": True, "title": "vsp"}],
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    errors, requests = 'http_requests_total{status=~"5.."}', "http_requests_total"
    return dashboard(
        "vsp-overview",
        "Platform overview",
        [
            panel("Targets up", ("sum(up)", "up"), kind="stat", width=6),
            panel("Targets down", ("count(up == 0) or vector(0)", "down"), kind="stat", width=6),
            panel(
                "Requests per second",
                (f"sum(rate(http_requests_total[{RATE}]))", "all"),
                kind="stat",
                unit="reqps",
                width=6,
            ),
            panel(
                "5xx ratio",
                (ratio(errors, requests), "5xx"),
                kind="stat",
                unit="percentunit",
                width=6,
            ),
            row("Rate, errors, duration per service"),
            panel(
                "Request rate by service",
                (f"sum by (job) (rate(http_requests_total[{RATE}]))", "{{job}}"),
                unit="reqps",
                stack=True,
            ),
            panel(
                "5xx ratio by service",
                (ratio(errors, requests, "job"), "{{job}}"),
                unit="percentunit",
            ),
            panel(
                "p95 duration by service",
                (quantile("0.95", "http_request_duration_seconds", "job"), "{{job}}"),
                unit="s",
            ),
            panel(
                "p50 duration by service",
                (quantile("0.5", "http_request_duration_seconds", "job"), "{{job}}"),
                unit="s",
            ),
            panel(
                "Responses by status class",
                (
                    "sum by (job, class) (label_replace(rate(http_requests_total[" + RATE + "]), "
                    '"class", "${1}xx", "status", "(.).."))',
                    "{{job}} {{class}}",
                ),
                unit="reqps",
            ),
            panel(
                "Requests in progress",
                ("sum by (job) (http_requests_in_progress)", "{{job}}"),
            ),
            row("Processes"),
            panel(
                "CPU by process",
                (f"rate(process_cpu_seconds_total[{RATE}])", "{{job}} {{instance}}"),
                unit="percentunit",
            ),
            panel(
                "Resident memory by process",
                ("process_resident_memory_bytes", "{{job}} {{instance}}"),
                unit="bytes",
            ),
            panel(
                "Response bytes by service",
                (f"sum by (job) (rate(http_response_bytes_total[{RATE}]))", "{{job}}"),
                unit="Bps",
                width=24,
            ),
        ],
        ["overview"],
    )


def uploads() -> dict[str, Any]:
    jobs = 'job=~"upload|chunked_upload"'
    return dashboard(
        "vsp-uploads",
        "Uploads",
        [
            panel(
                "Upload requests by route and status",
                (
                    f"sum by (job, route, status) (rate(http_requests_total{{{jobs}}}[{RATE}]))",
                    "{{job}} {{route}} {{status}}",
                ),
                unit="reqps",
            ),
            panel(
                "p95 request duration by route",
                (
                    quantile("0.95", "http_request_duration_seconds", "job, route", f"{{{jobs}}}"),
                    "{{job}} {{route}}",
                ),
                unit="s",
            ),
            panel(
                "Uploads in progress",
                (f"sum by (job, route) (http_requests_in_progress{{{jobs}}})", "{{job}} {{route}}"),
            ),
            panel(
                "Concurrency caps: slots taken in the busiest process, and the cap",
                (
                    f"max by (job, cap) (http_capped_requests_in_progress{{{jobs}}})",
                    "{{job}} {{cap}}",
                ),
                (
                    f"max by (job, cap) (http_capped_requests_limit{{{jobs}}})",
                    "{{job}} {{cap}} cap",
                ),
                description="Uploads, tus PATCHes and event streams at once per process; past the "
                "cap a request gets 503 with Retry-After.",
            ),
            panel(
                "Refused by a full cap (503)",
                (
                    sum_rate(f"http_capped_requests_refused_total{{{jobs}}}", "job, cap"),
                    "{{job}} {{cap}}",
                ),
                unit="reqps",
            ),
            panel(
                "Rejected uploads (4xx) by status",
                (
                    "sum by (job, status) "
                    f'(rate(http_requests_total{{{jobs}, status=~"4.."}}[{RATE}]))',
                    "{{job}} {{status}}",
                ),
                unit="reqps",
            ),
            panel(
                "Jobs published from the outbox",
                (f"sum by (job, type) (rate(outbox_published_total[{RATE}]))", "{{job}} {{type}}"),
                (f"sum by (job) (rate(outbox_pruned_total[{RATE}]))", "{{job}} sent rows pruned"),
                unit="ops",
            ),
            panel(
                "Outbox publish errors",
                (f"sum by (job) (rate(outbox_publish_errors_total[{RATE}]))", "{{job}}"),
                (f"sum by (job) (rate(outbox_unroutable_total[{RATE}]))", "{{job}} unroutable"),
                unit="ops",
                description="Failed or timed-out publishes, and jobs the broker returned because "
                "no queue was bound; each stays unsent and is retried.",
            ),
            panel(
                "Webhook delivery attempts by outcome",
                (sum_rate("webhook_deliveries_total", "outcome"), "{{outcome}}"),
                unit="ops",
                description="Attempts of the origins' dispatchers: delivered (2xx), retrying "
                "(another attempt is due), failed (out of attempts).",
            ),
            panel(
                "p95 webhook attempt time",
                (quantile("0.95", "webhook_attempt_duration_seconds"), "p95"),
                unit="s",
                description="Resolution, connection and answer of one attempt (10 s at most).",
            ),
        ],
        ["uploads"],
    )


def transcoding() -> dict[str, Any]:
    return dashboard(
        "vsp-transcoding",
        "Transcoding",
        [
            panel(
                "Jobs waiting",
                ('max(mq_queue_messages{queue="jobs"})', "jobs"),
                kind="stat",
                width=6,
            ),
            panel(
                "Dead letters",
                ('max(mq_queue_messages{queue="dead"})', "dead"),
                kind="stat",
                width=6,
            ),
            panel(
                "Busy workers",
                ("sum by (mode) (transcode_worker_busy)", "{{mode}}"),
                kind="stat",
                width=6,
            ),
            panel("Workers up", ('sum(up{job="transcoder"})', "workers"), kind="stat", width=6),
            panel(
                "Queue depth",
                ("max by (queue) (mq_queue_messages)", "{{queue}}"),
                description="Ready messages per queue role, as every broker client sees it.",
            ),
            panel(
                "Consumers on the job queue",
                ('max(mq_queue_consumers{queue="jobs"})', "push consumers"),
            ),
            panel(
                "Queue wait by worker mode",
                (quantile("0.5", "transcode_queue_wait_seconds", "mode"), "p50 {{mode}}"),
                (quantile("0.95", "transcode_queue_wait_seconds", "mode"), "p95 {{mode}}"),
                unit="s",
                description="From a job's publication to a worker starting it.",
            ),
            panel(
                "Transcode duration by worker mode",
                (quantile("0.5", "transcode_duration_seconds", "mode"), "p50 {{mode}}"),
                (quantile("0.95", "transcode_duration_seconds", "mode"), "p95 {{mode}}"),
                unit="s",
            ),
            panel(
                "Jobs by outcome",
                (
                    f"sum by (mode, outcome) (rate(transcode_jobs_total[{RATE}]))",
                    "{{mode}} {{outcome}}",
                ),
                unit="ops",
                stack=True,
            ),
            panel(
                "Realtime factor (media s per wall s)",
                (quantile("0.5", "transcode_realtime_factor", "mode"), "p50 {{mode}}"),
            ),
            panel(
                "Worker channels lost and reopened",
                (sum_rate("transcode_worker_channels_lost_total", "mode"), "{{mode}}"),
                unit="ops",
                description="A broker restart, or RabbitMQ's consumer timeout firing on a job "
                "that ran longer; the job in hand finishes and its copy is acked as done.",
            ),
        ],
        ["transcoding"],
    )


def delivery() -> dict[str, Any]:
    hits = f'edge_requests_total{{result=~"{CACHED}"}}'
    lookups = f'edge_requests_total{{result=~"{CACHED}|miss|pass"}}'
    return dashboard(
        "vsp-delivery",
        "Delivery",
        [
            panel(
                "Edge hit ratio",
                (ratio(hits, lookups), "all edges"),
                kind="stat",
                unit="percentunit",
                width=8,
            ),
            panel(
                "Bytes to viewers",
                (f"sum(rate(edge_served_bytes_total[{RATE}]))", "edges"),
                kind="stat",
                unit="Bps",
                width=8,
            ),
            panel(
                "Origin fetches per second",
                (f"sum(rate(edge_origin_fetches_total[{RATE}]))", "fetches"),
                kind="stat",
                unit="ops",
                width=8,
            ),
            panel(
                "Hit ratio by edge",
                (ratio(hits, lookups, "instance"), "{{instance}}"),
                ("edge_cache_hit_ratio", "since start {{instance}}"),
                unit="percentunit",
            ),
            panel(
                "Edge requests by cache result",
                (f"sum by (result) (rate(edge_requests_total[{RATE}]))", "{{result}}"),
                unit="reqps",
                stack=True,
            ),
            panel(
                "Bytes served by cache result",
                (f"sum by (result) (rate(edge_served_bytes_total[{RATE}]))", "{{result}}"),
                unit="Bps",
                stack=True,
            ),
            panel(
                "Origin fetches by reason and outcome",
                (
                    f"sum by (reason, outcome) (rate(edge_origin_fetches_total[{RATE}]))",
                    "{{reason}} {{outcome}}",
                ),
                unit="ops",
            ),
            panel(
                "p95 origin fetch time",
                (quantile("0.95", "edge_origin_fetch_seconds", "reason"), "{{reason}}"),
                unit="s",
            ),
            panel(
                "Cache fill by edge and tier",
                ("edge_cache_bytes / edge_cache_capacity_bytes", "{{instance}} {{tier}}"),
                unit="percentunit",
            ),
            panel(
                "Cached objects and evictions",
                ("sum by (instance, tier) (edge_cache_objects)", "objects {{instance}} {{tier}}"),
                (
                    f"sum by (instance, tier) (rate(edge_cache_evictions_total[{RATE}]))",
                    "evictions/s {{instance}} {{tier}}",
                ),
                (
                    f"sum by (instance) (rate(edge_cache_purged_total[{RATE}]))",
                    "purged/s {{instance}}",
                ),
            ),
            panel(
                "Prefetch and warming",
                (f"sum by (outcome) (rate(edge_prefetch_total[{RATE}]))", "prefetch {{outcome}}"),
                (f"sum(rate(edge_prefetch_used_total[{RATE}]))", "prefetch used"),
                (f"sum by (outcome) (rate(edge_warm_objects_total[{RATE}]))", "warm {{outcome}}"),
                (f"sum(rate(edge_warm_used_total[{RATE}]))", "warm used"),
                unit="ops",
            ),
            panel(
                "p95 time to warm a ready video",
                (quantile("0.95", "edge_warm_seconds"), "p95"),
                unit="s",
            ),
            panel(
                "Origin traffic",
                (f'sum(rate(http_response_bytes_total{{job="origin"}}[{RATE}]))', "bytes/s out"),
                (f'sum(rate(http_requests_total{{job="origin"}}[{RATE}]))', "requests/s"),
            ),
        ],
        ["delivery"],
    )


def balancers() -> dict[str, Any]:
    return dashboard(
        "vsp-balancers",
        "Balancers",
        [
            row("Redirectors (CDN / origin ratio)"),
            panel(
                "Redirects by target",
                (f"sum by (target) (rate(redirector_redirects_total[{RATE}]))", "{{target}}"),
                unit="reqps",
                stack=True,
            ),
            panel(
                "Share sent to the origin",
                (
                    ratio(
                        'redirector_redirects_total{target="origin"}', "redirector_redirects_total"
                    ),
                    "measured",
                ),
                ("1 / avg(redirector_config_ratio)", "configured"),
                unit="percentunit",
            ),
            panel(
                "Redirects per instance",
                (f"sum by (instance) (rate(redirector_redirects_total[{RATE}]))", "{{instance}}"),
                unit="reqps",
            ),
            panel(
                "Rejected redirect requests",
                (f"sum by (error) (rate(redirector_rejected_total[{RATE}]))", "{{error}}"),
                unit="reqps",
            ),
            panel(
                "Configuration in use",
                ("redirector_config_version", "version {{instance}}"),
                ("redirector_config_from_database", "from database {{instance}}"),
                ("redirector_config_listener_up", "listening {{instance}}"),
            ),
            panel(
                "Configuration reloads",
                (
                    f"sum by (outcome) (rate(redirector_config_reloads_total[{RATE}]))",
                    "{{outcome}}",
                ),
                unit="ops",
            ),
            row("Metrics-aware balancer"),
            panel(
                "Requests by backend and outcome",
                (
                    f"sum by (backend, outcome) (rate(balancer_upstream_requests_total[{RATE}]))",
                    "{{backend}} {{outcome}}",
                ),
                unit="reqps",
                stack=True,
            ),
            panel(
                "Backend score (lower is better)",
                ("max by (backend) (balancer_backend_score)", "{{backend}}"),
            ),
            panel("Backend tier", ("max by (backend) (balancer_backend_tier)", "{{backend}}")),
            panel("Backend up", ("min by (backend) (balancer_backend_up)", "{{backend}}")),
            panel(
                "Backend response time (peak EWMA)",
                ("max by (backend) (balancer_backend_response_time_seconds)", "{{backend}}"),
                unit="s",
            ),
            panel(
                "In-flight requests by backend",
                ("sum by (backend) (balancer_backend_in_flight_requests)", "{{backend}}"),
            ),
            panel(
                "Failures and ejections",
                (
                    f"sum by (backend) (rate(balancer_backend_failures_total[{RATE}]))",
                    "failures {{backend}}",
                ),
                (
                    f"sum by (backend) (increase(balancer_backend_ejections_total[{RATE}]))",
                    "ejections {{backend}}",
                ),
                width=24,
            ),
        ],
        ["balancers"],
    )


DASHBOARDS = {
    "overview.json": overview,
    "uploads.json": uploads,
    "transcoding.json": transcoding,
    "delivery.json": delivery,
    "balancers.json": balancers,
}


def render() -> dict[str, str]:
    """File name to JSON text of every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)


if __name__ == "__main__":
    main()
