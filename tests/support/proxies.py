"""haproxy and nginx as the platform runs them, in the foreground, unprivileged, on free ports.

Their configurations are rendered by ``services.configs.proxies``, the code `vsp up` and the
deployments use.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.cli.up import local_certificate
from services.configs.proxies import (
    Backend,
    FrontDoor,
    HaproxyBalance,
    render_haproxy,
    render_nginx,
)
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _address(url: str) -> str:
    return url.removeprefix("http://")


def start_haproxy(
    procs: Processes,
    work: Path,
    edges: Sequence[str],
    *,
    balance: HaproxyBalance = "consistent",
    check_interval_ms: int = 300,
) -> Proc:
    """haproxy over ``edges`` (base URLs) with its config in ``work``; ``proc.url`` is its
    frontend."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    backends = [Backend(f"edge{n}", _address(url)) for n, url in enumerate(edges, start=1)]
    config = work / "haproxy.cfg"
    config.write_text(
        render_haproxy(
            backends,
            bind=f"127.0.0.1:{port}",
            balance=balance,
            check_interval_ms=check_interval_ms,
        )
    )
    proc = procs.start(
        "haproxy",
        ["haproxy", "-db", "-f", str(config)],
        ready_url=f"http://127.0.0.1:{port}/haproxy/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def start_nginx(
    procs: Processes,
    work: Path,
    redirectors: Sequence[str],
    *,
    haproxy: str = "127.0.0.1:9",
    front_door: FrontDoor | None = None,
) -> Proc:
    """nginx in front of ``redirectors`` (base URLs) and of ``haproxy`` (``host:port``), with
    its config, pid and logs in ``work``, and the front door when given; ``proc.url`` is where
    the redirectors' server listens."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "nginx.conf"
    error_log = str(work / "error.log")
    conf.write_text(
        render_nginx(
            [Backend(f"r{n}", _address(url)) for n, url in enumerate(redirectors)],
            listen=f"127.0.0.1:{port}",
            haproxy=haproxy,
            worker_processes=1,
            pid=str(work / "nginx.pid"),
            error_log=error_log,
            temp_dir=str(work),
            front_door=front_door,
        )
    )
    proc = procs.start(
        "nginx",
        [NGINX, "-p", str(work), "-e", error_log, "-c", str(conf), "-g", "daemon off;"],
        ready_url=f"http://127.0.0.1:{port}/nginx/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@dataclass(frozen=True)
class Front:
    """A running front door: its plain HTTP and its HTTPS (h2) base URLs, and its certificate."""

    http: str
    https: str
    certificate: Path


def start_front_door(
    procs: Processes,
    work: Path,
    *,
    origin: str,
    upload: str = "http://127.0.0.1:9",
    chunked_upload: str = "http://127.0.0.1:9",
    balancer: str = "http://127.0.0.1:9",
    redirectors: Sequence[str] = ("http://127.0.0.1:9",),
) -> Front:
    """The front door (nginx, as `vsp up` runs it) over the services at these base URLs, on
    free ports, with the suite's self-signed certificate for 127.0.0.1."""
    http_port, https_port = free_port(), free_port()
    certificate, key = local_certificate(work)
    door = FrontDoor(
        origin=_address(origin),
        upload=_address(upload),
        chunked_upload=_address(chunked_upload),
        balancer=_address(balancer),
        certificate=str(certificate),
        certificate_key=str(key),
        http_listen=f"127.0.0.1:{http_port}",
        https_listen=f"127.0.0.1:{https_port}",
    )
    start_nginx(procs, work, redirectors, front_door=door)
    return Front(f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}", certificate)
