"""Helpers of the observability tests: the whole suite on free ports, and a real Prometheus."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.configs.prometheus import ScrapeJob, prometheus_command, render_prometheus
from services.runtime.registry import SERVICES
from tests.support import VSP, Proc, Processes, free_port, wait_for, wait_http

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass
class Suite:
    """Every registered service (edges twice) and both worker modes, on free ports."""

    urls: dict[str, list[str]] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def addresses(self, job: str) -> list[str]:
        return [url.removeprefix("http://") for url in self.urls[job]]

    def scrape_jobs(self) -> list[ScrapeJob]:
        return [ScrapeJob(job, self.addresses(job)) for job in self.urls]


def _service_env(name: str, ports: dict[str, list[int]], tmp: Path, index: int) -> dict[str, str]:
    """What a service needs to find its neighbours in this suite."""
    if name == "edge":
        return {
            "EDGE_ORIGIN_URL": f"http://127.0.0.1:{ports['origin'][0]}",
            "EDGE_CACHE_DIR": str(tmp / f"edge-cache-{index}"),
        }
    if name == "balancer":
        backends = [f"http://127.0.0.1:{p}" for p in ports.get("edge", [])]
        return {"BALANCER_BACKENDS": json.dumps(backends)} if backends else {}
    return {}


def start_suite(procs: Processes, tmp: Path, *, edges: int = 2) -> Suite:
    """Start every service in the registry and a push and a pull worker, in parallel."""
    ports = {
        name: [free_port() for _ in range(edges if name == "edge" else 1)] for name in SERVICES
    }
    suite = Suite()
    pending: list[tuple[str, Proc]] = []
    for name, name_ports in ports.items():
        for index, port in enumerate(name_ports):
            proc = procs.start(
                name,
                [*VSP, "serve", name, "--port", str(port)],
                env=_service_env(name, ports, tmp, index),
            )
            url = f"http://127.0.0.1:{port}"
            proc.url = url
            suite.urls.setdefault(name, []).append(url)
            pending.append((f"{url}/readyz", proc))
    for mode in ("push", "pull"):
        port = free_port()
        proc = procs.start(
            f"worker-{mode}", [*VSP, "worker", "--mode", mode, "--metrics-port", str(port)]
        )
        proc.url = f"http://127.0.0.1:{port}"
        suite.urls.setdefault("transcoder", []).append(proc.url)
        pending.append((f"{proc.url}/metrics", proc))
    for url, proc in pending:
        wait_http(url, timeout=60, proc=proc)
        suite.procs.append(proc)
    return suite


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


def start_proxies(procs: Processes, tmp: Path, suite: Suite) -> str:
    """haproxy over the suite's edges and nginx over its redirectors and haproxy; nginx's URL."""
    from services.configs.proxies import Backend, render_haproxy, render_nginx

    haproxy_port, nginx_port = free_port(), free_port()
    edges = [Backend(f"edge-{i}", a) for i, a in enumerate(suite.addresses("edge"), start=1)]
    haproxy_cfg = tmp / "haproxy.cfg"
    haproxy_cfg.write_text(render_haproxy(edges, bind=f"127.0.0.1:{haproxy_port}"))
    procs.start(
        "haproxy",
        ["haproxy", "-db", "-f", str(haproxy_cfg)],
        ready_url=f"http://127.0.0.1:{haproxy_port}/haproxy/healthz",
    )
    redirectors = [Backend("r", a) for a in suite.addresses("redirector")]
    nginx_dir = tmp / "nginx"
    nginx_dir.mkdir()
    nginx_conf = nginx_dir / "nginx.conf"
    nginx_conf.write_text(
        render_nginx(
            redirectors,
            listen=f"127.0.0.1:{nginx_port}",
            haproxy=f"127.0.0.1:{haproxy_port}",
            pid=str(nginx_dir / "nginx.pid"),
            error_log=str(nginx_dir / "error.log"),
            temp_dir=str(nginx_dir),
            worker_processes=1,
        )
    )
    nginx = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(nginx_dir), "-c"]
    procs.start(
        "nginx",
        [*nginx, str(nginx_conf), "-e", str(nginx_dir / "error.log"), "-g", "daemon off;"],
        ready_url=f"http://127.0.0.1:{nginx_port}/nginx/healthz",
    )
    return f"http://127.0.0.1:{nginx_port}"
