"""haproxy and nginx as the platform runs them, in the foreground, unprivileged, on free ports.

Their configurations are rendered by ``services.configs.proxies``, the code `vsp up` and the
deployments use.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from services.configs.proxies import Backend, HaproxyBalance, render_haproxy, render_nginx
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
    procs: Processes, work: Path, redirectors: Sequence[str], *, haproxy: str = "127.0.0.1:9"
) -> Proc:
    """nginx in front of ``redirectors`` (base URLs) and of ``haproxy`` (``host:port``), with
    its config, pid and logs in ``work``; ``proc.url`` is where it listens."""
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
        )
    )
    proc = procs.start(
        "nginx",
        [NGINX, "-p", str(work), "-e", error_log, "-c", str(conf), "-g", "daemon off;"],
        ready_url=f"http://127.0.0.1:{port}/nginx/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc
