"""The rendered Prometheus configurations: committed files current, every service scraped."""

from __future__ import annotations

import yaml

from services.configs.prometheus import (
    PROMETHEUS_DIR,
    DnsTargets,
    ScrapeJob,
    compose_jobs,
    local_jobs,
    render_prometheus,
)
from services.runtime.registry import SERVICES

WORKERS = "transcoder"


def test_committed_files_match_the_renderer() -> None:
    assert (PROMETHEUS_DIR / "prometheus.yml").read_text() == render_prometheus(compose_jobs())
    assert (PROMETHEUS_DIR / "prometheus.local.yml").read_text() == render_prometheus(local_jobs())


def test_every_service_and_the_workers_are_scraped_in_both_variants() -> None:
    for jobs in (compose_jobs(), local_jobs()):
        assert {*SERVICES, WORKERS} <= {job.name for job in jobs}


def test_local_targets_are_the_registry_default_ports() -> None:
    jobs = {job.name: job for job in local_jobs()}
    for name, spec in SERVICES.items():
        assert f"127.0.0.1:{spec.default_port}" in jobs[name].targets


def test_rendered_yaml_parses_to_the_jobs() -> None:
    jobs = [
        ScrapeJob("api", ["a:1", "b:2"]),
        ScrapeJob("workers", dns=[DnsTargets("w", 9101)], metrics_path="/m"),
    ]
    config = yaml.safe_load(
        render_prometheus(jobs, rule_files=["r.yml"], external_labels={"site": 'x"y'})
    )
    assert config["rule_files"] == ["r.yml"]
    assert config["global"]["external_labels"] == {"site": 'x"y'}
    api, workers = config["scrape_configs"]
    assert api["job_name"] == "api"
    assert [t["targets"] for t in api["static_configs"]] == [["a:1"], ["b:2"]]
    assert workers["metrics_path"] == "/m"
    assert workers["dns_sd_configs"] == [
        {"names": ["w"], "type": "A", "port": 9101, "refresh_interval": "15s"}
    ]


def test_a_job_without_targets_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="no targets"):
        render_prometheus([ScrapeJob("empty")])
