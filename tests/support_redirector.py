"""Helpers for the redirector tests: a cluster behind a real nginx, a private PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.configs.proxies import Backend, render_nginx
from shared.db.migrate import upgrade
from tests.support import VSP, Proc, Processes, free_port, wait_for, wait_http

ADMIN_TOKEN = "redirector-test-admin-token"


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_redirectors(
    procs: Processes, count: int, env: dict[str, str] | None = None
) -> list[Proc]:
    """``count`` redirector processes on free ports, started together, each ready."""
    started = []
    for n in range(1, count + 1):
        port = free_port()
        proc = procs.start(
            f"redirector-{n}",
            [*VSP, "serve", "redirector", "--port", str(port)],
            env={
                "REDIRECTOR_INSTANCE_ID": f"redirector-{n}",
                "REDIRECTOR_ADMIN_TOKEN": ADMIN_TOKEN,
                **(env or {}),
            },
        )
        proc.url = f"http://127.0.0.1:{port}"
        started.append(proc)
    for proc in started:
        wait_http(f"{proc.url}/readyz", timeout=60, proc=proc)
        # Ready answers before the instance LISTENs for changes; a change posted to another
        # instance meanwhile would reach this one only when its listener catches up.
        wait_for(
            lambda proc=proc: listener_up(proc.url or ""),
            timeout=60,
            what=f"{proc.name} to listen for configuration changes",
        )
    return started


def listener_up(url: str) -> bool:
    """Whether the instance at ``url`` is subscribed to configuration changes."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return re.search(r"^redirector_config_listener_up 1(\.0)?$", text, re.M) is not None


def start_nginx(
    procs: Processes, redirectors: list[Proc], work_dir: Path, haproxy: str = "127.0.0.1:9"
) -> Proc:
    """A foreground, unprivileged nginx on a free port in front of ``redirectors``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work_dir / "nginx.conf"
    conf.write_text(
        render_nginx(
            [
                Backend(f"r{n}", (p.url or "").removeprefix("http://"))
                for n, p in enumerate(redirectors)
            ],
            listen=f"127.0.0.1:{port}",
            haproxy=haproxy,
            worker_processes=1,
            pid=str(work_dir / "nginx.pid"),
            error_log=str(work_dir / "error.log"),
            temp_dir=str(work_dir),
        )
    )
    proc = procs.start(
        "nginx",
        [
            "nginx",
            "-p",
            str(work_dir),
            "-e",
            str(work_dir / "error.log"),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ],
        ready_url=f"http://127.0.0.1:{port}/nginx/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def sides(client: httpx.Client, url: str, video: str, count: int, origin_prefix: str) -> list[str]:
    """Ask ``count`` times in a row; 'origin' or 'cdn' per answer."""
    out = []
    for _ in range(count):
        response = client.get(url, params={"video": video})
        assert response.status_code == 302, response.text
        out.append("origin" if response.headers["location"].startswith(origin_prefix) else "cdn")
    return out


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster a test may stop, unlike the shared one."""

    data_dir: Path
    port: int
    bin_dir: Path

    @classmethod
    def create(cls) -> PrivatePostgres:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        initdb = Path(shutil.which("initdb") or (bins[-1] if bins else "initdb"))
        root = Path(tempfile.mkdtemp(prefix="vsp-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        data = root / "data"
        subprocess.run(
            _as_postgres(
                [
                    str(initdb),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        db = cls(data, free_port(), initdb.parent)
        db.start()
        return db

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/vsp"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data_dir} -c fsync=off"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-o",
                    options,
                    "-l",
                    str(self.data_dir / "server.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]
            ),
            check=False,
            capture_output=True,
            timeout=60,
        )

    def migrate(self) -> None:
        upgrade(self.url)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)
