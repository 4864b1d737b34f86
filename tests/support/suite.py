"""The whole platform at once: every registered service (edges twice) and both worker modes on
free ports, and the proxies in front of them as `vsp up` runs them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from services.configs.prometheus import ScrapeJob
from services.runtime.registry import SERVICES
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.proxies import start_haproxy, start_nginx


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
    pending: list[Proc] = []
    for name, name_ports in ports.items():
        for index, port in enumerate(name_ports):
            env = _service_env(name, ports, tmp, index)
            proc = procs.service(name, port=port, env=env, wait=False)
            suite.urls.setdefault(name, []).append(proc.url)
            pending.append(proc)
    for mode in ("push", "pull"):
        proc = procs.worker(mode, wait=False)
        suite.urls.setdefault("transcoder", []).append(proc.url)
        pending.append(proc)
    procs.wait_ready(pending, timeout=60)
    suite.procs.extend(pending)
    return suite


def start_proxies(procs: Processes, tmp: Path, suite: Suite) -> str:
    """haproxy over the suite's edges and nginx over its redirectors and haproxy; nginx's URL."""
    haproxy = start_haproxy(procs, tmp, suite.urls["edge"])
    nginx = start_nginx(
        procs, tmp / "nginx", suite.urls["redirector"], haproxy=haproxy.url.removeprefix("http://")
    )
    return nginx.url
