"""A real Prometheus server for the observability tests, and the dashboards' queries."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.configs.prometheus import ScrapeJob, prometheus_command, render_prometheus
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass
class Prometheus:
    url: str
    proc: Proc

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", body
        return list(body["data"]["result"])

    def targets(self) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10)
        return list(response.json()["data"]["activeTargets"])

    def wait_all_up(self, expected: int, timeout: float = 60) -> list[dict]:
        """Wait until ``expected`` targets are active and every one reports health up."""

        def check() -> list[dict] | None:
            targets = self.targets()
            healthy = len(targets) == expected and all(t["health"] == "up" for t in targets)
            return targets if healthy else None

        try:
            return wait_for(check, timeout=timeout, interval=0.5, what="every target up")
        except TimeoutError as exc:
            summary = [(t["labels"], t["health"], t.get("lastError")) for t in self.targets()]
            raise AssertionError(f"targets not all up: {summary}") from exc

    def wait_sample(
        self,
        expr: str,
        timeout: float = 30,
        accept: Callable[[list[dict]], bool] = bool,
    ) -> list[dict]:
        """The result of ``expr`` once it is one ``accept`` takes (by default: not empty)."""

        def check() -> list[dict] | None:
            found = self.query(expr)
            return found if found and accept(found) else None

        return wait_for(check, timeout=timeout, interval=0.5, what=expr)


def start_prometheus(
    procs: Processes,
    tmp: Path,
    jobs: list[ScrapeJob],
    *,
    rule_files: tuple[str, ...] = (),
    scrape_interval: str = "1s",
    configure: Callable[[str], str] = lambda text: text,
) -> Prometheus:
    """A real Prometheus scraping ``jobs`` every ``scrape_interval``."""
    config = tmp / "prometheus.yml"
    text = render_prometheus(
        jobs, rule_files=rule_files, scrape_interval=scrape_interval, evaluation_interval="1s"
    )
    config.write_text(configure(text))
    port = free_port()
    listen = f"127.0.0.1:{port}"
    proc = procs.start(
        "prometheus",
        prometheus_command(config, tmp / "prometheus-data", listen=listen, binary=PROMETHEUS),
        ready_url=f"http://{listen}/-/ready",
    )
    return Prometheus(f"http://{listen}", proc)


def dashboard_queries() -> dict[str, list[str]]:
    """Dashboard file name to the PromQL of every panel target."""
    queries: dict[str, list[str]] = {}
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        queries[path.name] = [
            target["expr"]
            for panel in board["panels"]
            for target in panel.get("targets", [])
            if target.get("expr")
        ]
    return queries
