"""The Grafana dashboards and alert rules query only metrics the code exports, in valid PromQL."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.support.paths import ROOT
from tests.support.prometheus import PROMTOOL, dashboard_queries

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself for every target rather than scraping them.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# The client library's own collectors: exported everywhere, not worth a panel each.
LIBRARY_PREFIXES = ("process_", "python_")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def build_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric_modules() -> list[str]:
    """Every module of the code base that defines Prometheus metrics."""
    names = []
    for package in ("shared", "services"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            if re.search(
                r"prometheus_client|\b(Counter|Gauge|Histogram|Summary)\(", path.read_text()
            ):
                names.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return names


def exported_families() -> dict[str, str]:
    """Family name to type of everything registered once the code's metric modules load."""
    for name in metric_modules():
        importlib.import_module(name)
    return {family.name: family.type for family in REGISTRY.collect()}


def exported_names() -> set[str]:
    """Every sample name the code can put on /metrics."""
    return {
        family + suffix for family, kind in exported_families().items() for suffix in SUFFIXES[kind]
    }


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group(0).lower() in KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_parser_finds_metric_names_only() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_seconds_bucket{job=~"x|y"}[5m])))'
        ' / on (job) group_left b_total offset 5m and c > bool 2 or vector(0) unless d{e="f"}'
        ' + label_replace(g, "class", "${1}xx", "status", "(.).." ) * $__rate_interval'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d", "g"}


def test_exported_names_cover_every_kind() -> None:
    names = exported_names()
    assert {"http_requests_total", "http_request_duration_seconds_bucket"} <= names
    assert {"edge_cache_bytes", "transcode_queue_wait_seconds_count", "mq_queue_messages"} <= names
    assert "http_requests" not in names and "edge_cache_bytes_total" not in names


def test_five_dashboards_are_provisioned_and_current() -> None:
    names = {path.name for path in DASHBOARDS}
    assert names == {
        "overview.json",
        "uploads.json",
        "transcoding.json",
        "delivery.json",
        "balancers.json",
    }
    assert build_module().render() == {path.name: path.read_text() for path in DASHBOARDS}
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("dashboard", [path.name for path in DASHBOARDS])
def test_every_metric_a_dashboard_queries_is_exported(dashboard: str) -> None:
    exported = exported_names() | SYNTHETIC
    queries = dashboard_queries()[dashboard]
    assert queries, f"{dashboard} has no queries"
    for expr in queries:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"{dashboard}: {expr!r} queries {sorted(missing)}, not exported"


def test_every_metric_an_alert_queries_is_exported() -> None:
    exported = exported_names() | SYNTHETIC
    for expr in alert_queries():
        assert metric_names(expr) - exported == set(), expr


def test_every_metric_of_the_code_is_on_a_dashboard() -> None:
    """The reverse direction: a new metric without a panel is noticed here."""
    used = {
        name for exprs in dashboard_queries().values() for e in exprs for name in metric_names(e)
    }
    unused = []
    for family, kind in exported_families().items():
        if family.startswith(LIBRARY_PREFIXES) or family in SYNTHETIC:
            continue
        samples = {family + suffix for suffix in SUFFIXES[kind] if suffix != "_created"}
        if not samples & used:
            unused.append(family)
    assert not unused, f"metrics on no dashboard: {sorted(unused)}"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool checks expressions of rule files, so each query becomes a recording rule.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(e for exprs in dashboard_queries().values() for e in exprs)
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_panels_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {ds["uid"] for ds in provisioned}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vsp.yml").read_text())[
        "providers"
    ]
    assert [p["type"] for p in providers] == ["file"]


def test_every_metric_is_documented() -> None:
    documented = (ROOT / "docs" / "api" / "metrics.md").read_text()
    for family, kind in exported_families().items():
        if family.startswith(LIBRARY_PREFIXES):
            continue
        name = family + ("_total" if kind == "counter" else "")
        assert f"`{name}`" in documented, f"{name} is missing from docs/api/metrics.md"
