"""A real Prometheus scraping the whole suite, its alert rules and every dashboard query on live
data (promtool's checks of the same configs: tests/integration/test_promtool.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import httpx

from services.configs.prometheus import local_jobs
from services.runtime.registry import SERVICES
from tests.support.paths import ROOT
from tests.support.processes import Processes
from tests.support.prometheus import dashboard_queries, start_prometheus
from tests.support.signing import signer_of
from tests.support.suite import start_proxies, start_suite

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"

# A metric only the code of that job exports, so a sample proves the right process answered.
OWN_METRIC = {
    "upload": 'http_requests_total{route="unmatched"}',
    "chunked_upload": 'http_requests_total{route="unmatched"}',
    "origin": 'http_requests_total{route="unmatched"}',
    "edge": 'edge_cache_capacity_bytes{tier="disk"}',
    "redirector": "redirector_config_ratio",
    "balancer": "balancer_backend_up",
    "transcoder": 'mq_queue_messages{queue="jobs"}',
}


def test_prometheus_scrapes_every_service(procs: Processes, tmp_path: Path) -> None:
    suite = start_suite(procs, tmp_path)
    assert set(suite.urls) == {*SERVICES, "transcoder"}
    # The config `vsp up` uses names the same jobs, so nothing running goes unwatched there.
    assert set(suite.urls) <= {job.name for job in local_jobs()}

    prometheus = start_prometheus(
        procs, tmp_path, suite.scrape_jobs(), rule_files=(str(PROMETHEUS_DIR / "alerts.yml"),)
    )
    expected = sum(len(urls) for urls in suite.urls.values())
    targets = prometheus.wait_all_up(expected)
    assert {t["labels"]["job"] for t in targets} == set(suite.urls)

    # An unknown path is a 404 every HTTP service counts under the "unmatched" route.
    for job, urls in suite.urls.items():
        if job != "transcoder":
            for url in urls:
                assert httpx.get(f"{url}/no-such-page", timeout=10).status_code == 404

    for job, urls in suite.urls.items():
        expr = OWN_METRIC.get(job, "http_requests_total")
        selector = f'job="{job}"'
        query = expr.replace("{", "{" + selector + ",") if "{" in expr else f"{expr}{{{selector}}}"
        expected_instances = {url.removeprefix("http://") for url in urls}
        # Each instance's series appears with its own next scrape: wait for all of them, not
        # for the first.
        samples = prometheus.wait_sample(
            query,
            accept=lambda found, want=expected_instances: (
                {s["metric"]["instance"] for s in found} >= want
            ),
        )
        instances = {s["metric"]["instance"] for s in samples}
        assert instances == expected_instances, (job, samples)
        assert all(float(s["value"][1]) >= 0 for s in samples)

    # Real traffic through nginx (redirects) and nginx -> haproxy -> edges -> origin (objects)
    # shows up in the series the Balancers and Delivery dashboards plot.
    front = start_proxies(procs, tmp_path, suite)
    video = quote("http://s1.origin-cluster/video/1/a.m3u8", safe="")
    for _ in range(20):
        assert httpx.get(f"{front}/?video={video}", timeout=10).status_code in (301, 302)
    signer = signer_of()
    for n in range(10):
        url = signer.signed_url(f"{front}/origin", f"videos/{uuid.uuid4()}/hls/{n}.m4s", 60)
        assert httpx.get(url, timeout=10).status_code == 404
    redirects = prometheus.wait_sample('sum(redirector_redirects_total{job="redirector"}) >= 20')
    assert float(redirects[0]["value"][1]) >= 20
    edge_requests = prometheus.wait_sample('sum(edge_requests_total{job="edge"}) >= 10')
    assert float(edge_requests[0]["value"][1]) >= 10
    assert prometheus.wait_sample('sum(edge_origin_fetches_total{job="edge"}) >= 1')

    # Every dashboard query evaluates on live data (Prometheus answers errors with 400).
    for queries in dashboard_queries().values():
        for expr in queries:
            prometheus.query(expr.replace("$__rate_interval", "1m"))

    # Every target is still up after the traffic. ``up`` is as of each target's last scrape, and
    # a scrape a busy machine answers late counts as down until the next one: poll, as above.
    up = prometheus.wait_sample(f"count(up == 1) == {expected}", timeout=60)
    assert float(up[0]["value"][1]) == expected
    assert len(prometheus.query("up")) == expected
    # The rules loaded and evaluate against live data without errors.
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"availability", "transcoding", "delivery"}
    assert all(r["health"] != "err" for g in rules for r in g["rules"]), rules
