"""``vsp up``: the whole suite as local processes on the embedded defaults.

Checks tools and infrastructure (saying exactly what is missing and how to start it), migrates,
starts every service and worker, waits until each is ready, uploads a demo clip, waits until it
plays, prints where to watch, then keeps running until Ctrl-C, which stops every child. Meanwhile
it supervises: a child that exits is started again after a backoff, as compose's restart policy
and Kubernetes do, so one crash never takes the suite down.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from pydantic import Field

from services.cli.supervisor import Child, Supervisor, say, start, tail
from shared.core import ports
from shared.core.settings import BaseServiceSettings
from shared.media.samples import synthetic_clip

if TYPE_CHECKING:
    from services.cli.provision import DemoAccount
    from services.configs.proxies import Backend, FrontDoor


class SuiteSettings(BaseServiceSettings):
    upload_port: int = ports.UPLOAD
    chunked_upload_port: int = ports.CHUNKED_UPLOAD
    origin_port: int = ports.ORIGIN
    worker_metrics_port: int = ports.WORKER_METRICS
    balancer_port: int = ports.BALANCER
    edge_ports: tuple[int, ...] = ports.EDGES
    haproxy_port: int = ports.HAPROXY
    suite_ready_timeout_seconds: float = 180
    redirector_ports: tuple[int, ...] = ports.REDIRECTORS
    nginx_port: int = ports.NGINX_REDIRECT
    front_http_port: int = ports.FRONT_HTTP
    front_https_port: int = ports.FRONT_HTTPS
    front_door_cert_file: Path | None = Field(
        default=None,
        description="The front door's TLS certificate (PEM); unset, a self-signed one is made",
    )
    front_door_key_file: Path | None = Field(default=None, description="Its private key (PEM)")
    prometheus_port: int = ports.PROMETHEUS
    suite_restart_backoff_seconds: float = Field(
        default=1, gt=0, description="Wait before restarting a child that exited; doubles per exit"
    )
    suite_restart_backoff_max_seconds: float = Field(
        default=30, gt=0, description="Longest wait before restarting a child"
    )
    suite_restart_reset_seconds: float = Field(
        default=60, gt=0, description="A child up this long starts its backoff over"
    )


START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''",
    "RabbitMQ": "rabbitmq-server -detached",
}


async def _check_infra(settings: BaseServiceSettings) -> list[str]:
    import aio_pika
    import asyncpg
    from redis.asyncio import Redis
    from sqlalchemy.engine import make_url

    problems: list[str] = []
    url = make_url(settings.database_url).set(drivername="postgresql", database="postgres")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url.render_as_string(False)), 5)
        await conn.close()
    except Exception as exc:
        problems.append(
            f"PostgreSQL at {url.host}:{url.port or 5432} is not reachable ({exc}). "
            f"Start it: {START_HINTS['PostgreSQL']}"
        )
    redis = Redis.from_url(settings.redis_url)
    try:
        await asyncio.wait_for(redis.ping(), 5)
    except Exception as exc:
        problems.append(
            f"Redis at {settings.redis_url} is not reachable ({exc}). "
            f"Start it: {START_HINTS['Redis']}"
        )
    finally:
        await redis.aclose()
    try:
        connection = await asyncio.wait_for(aio_pika.connect(settings.amqp_url), 5)
        await connection.close()
    except Exception as exc:
        problems.append(
            f"RabbitMQ at {settings.amqp_url.split('@')[-1]} is not reachable "
            f"({exc}). Start it: {START_HINTS['RabbitMQ']}"
        )
    return problems


def _check_tools() -> list[str]:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    problems = []
    if missing:
        problems.append(
            f"{' and '.join(missing)} not found on PATH. Install: apt-get install ffmpeg"
        )
    if shutil.which("haproxy") is None:
        problems.append("haproxy not found on PATH. Install: apt-get install haproxy")
    return problems


_VSP = [sys.executable, "-m", "services.cli.main"]


def _serve_child(
    name: str,
    service: str,
    port: int,
    logs: Path,
    *,
    env: dict[str, str] | None = None,
    pass_port: bool = True,
) -> Child:
    """``vsp serve <service>`` on every interface, ready once its /readyz answers."""
    args = [*_VSP, "serve", service, "--host", "0.0.0.0"]
    if pass_port:
        args += ["--port", str(port)]
    return Child(name, args, f"http://127.0.0.1:{port}/readyz", logs / f"{name}.log", env or {})


def _worker_child(mode: str, metrics_port: int, logs: Path) -> Child:
    """A transcode worker in ``mode``, ready once its metrics endpoint answers."""
    return Child(
        f"worker-{mode}",
        [*_VSP, "worker", "--mode", mode, "--metrics-port", str(metrics_port)],
        f"http://127.0.0.1:{metrics_port}/metrics",
        logs / f"worker-{mode}.log",
    )


def _replicas(
    service: str,
    service_ports: tuple[int, ...],
    logs: Path,
    env: Callable[[str, int], dict[str, str]],
) -> tuple[list[Child], list[Backend]]:
    """``<service>-<n>`` on each port, with the backends a proxy in front of them lists."""
    from services.configs.proxies import Backend

    children: list[Child] = []
    backends: list[Backend] = []
    for number, port in enumerate(service_ports, start=1):
        name = f"{service}-{number}"
        backends.append(Backend(name, f"127.0.0.1:{port}"))
        children.append(_serve_child(name, service, port, logs, env=env(name, port)))
    return children, backends


def _children(settings: SuiteSettings, run_dir: Path) -> list[Child]:
    logs = run_dir / "logs"
    # These three listen on their own settings' ports, which the suite's settings mirror.
    children = [
        _serve_child("upload", "upload", settings.upload_port, logs, pass_port=False),
        _serve_child(
            "chunked_upload", "chunked_upload", settings.chunked_upload_port, logs, pass_port=False
        ),
        _serve_child("origin", "origin", settings.origin_port, logs, pass_port=False),
        _worker_child("push", settings.worker_metrics_port, logs),
        _worker_child("pull", settings.worker_metrics_port + 1, logs),
    ]
    children.append(_balancer_child(settings, logs))
    children += _edge_children(settings, run_dir)
    children += _redirector_children(settings, run_dir)
    return children


def _edge_children(settings: SuiteSettings, run_dir: Path) -> list[Child]:
    """The edges, each with its own cache folder, and haproxy hashing objects onto them."""
    from services.configs.proxies import render_haproxy

    def edge_env(name: str, port: int) -> dict[str, str]:
        return {
            "EDGE_ID": name,
            "EDGE_PORT": str(port),
            "EDGE_ORIGIN_URL": f"http://127.0.0.1:{settings.origin_port}",
            "EDGE_CACHE_DIR": str(run_dir / "edge-cache" / name),
        }

    children, backends = _replicas("edge", settings.edge_ports, run_dir / "logs", edge_env)
    config = run_dir / "haproxy" / "haproxy.cfg"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(render_haproxy(backends, bind=f"0.0.0.0:{settings.haproxy_port}"))
    children.append(
        Child(
            "haproxy",
            ["haproxy", "-db", "-f", str(config)],
            f"http://127.0.0.1:{settings.haproxy_port}/haproxy/healthz",
            run_dir / "logs" / "haproxy.log",
        )
    )
    return children


def _balancer_child(settings: SuiteSettings, logs: Path) -> Child:
    """The balancer in front of the suite's edges."""
    edges = [
        {"url": f"http://127.0.0.1:{edge_port}", "name": f"edge-{number}"}
        for number, edge_port in enumerate(settings.edge_ports, start=1)
    ]
    return _serve_child(
        "balancer",
        "balancer",
        settings.balancer_port,
        logs,
        env={"BALANCER_BACKENDS": json.dumps(edges)},
    )


def _front_door(settings: SuiteSettings, run_dir: Path) -> FrontDoor:
    """The front door over the suite's services, with the configured or a self-signed
    certificate."""
    from services.configs.proxies import FrontDoor

    cert, key = settings.front_door_cert_file, settings.front_door_key_file
    if cert is None or key is None:
        cert, key = local_certificate(run_dir)
    return FrontDoor(
        origin=f"127.0.0.1:{settings.origin_port}",
        upload=f"127.0.0.1:{settings.upload_port}",
        chunked_upload=f"127.0.0.1:{settings.chunked_upload_port}",
        balancer=f"127.0.0.1:{settings.balancer_port}",
        certificate=str(cert),
        certificate_key=str(key),
        http_listen=str(settings.front_http_port),
        https_listen=str(settings.front_https_port),
    )


def local_certificate(run_dir: Path) -> tuple[Path, Path]:
    """The suite's self-signed certificate for localhost and 127.0.0.1, made once and reused."""
    from services.upload.tls import ensure_self_signed

    return ensure_self_signed(run_dir / "tls" / "local.crt", run_dir / "tls" / "local.key")


def _redirector_children(settings: SuiteSettings, run_dir: Path) -> list[Child]:
    """Four redirectors and nginx in front of them (nginx also fronts haproxy on /origin/),
    and the front door in the same nginx."""
    from services.configs.proxies import render_nginx

    children, backends = _replicas(
        "redirector",
        settings.redirector_ports,
        run_dir / "logs",
        lambda name, _port: {
            "REDIRECTOR_INSTANCE_ID": name,
            # The CDN side is the suite's own edges, at the path the viewer asked the redirect
            # of: nginx (8080) and the front door (/r/) serve /origin/ from them.
            "REDIRECTOR_CDN_TARGET": os.environ.get("REDIRECTOR_CDN_TARGET", "edges"),
            "REDIRECTOR_ORIGIN_HOSTS": os.environ.get(
                "REDIRECTOR_ORIGIN_HOSTS", '["127.0.0.1", "localhost"]'
            ),
        },
    )
    if shutil.which("nginx") is None:
        say("nginx not found on PATH, redirectors run without it. Install: apt-get install nginx")
        return children
    nginx_dir = run_dir / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    error_log = run_dir / "logs" / "nginx-error.log"
    config = nginx_dir / "nginx.conf"
    config.write_text(
        render_nginx(
            backends,
            listen=str(settings.nginx_port),
            haproxy=f"127.0.0.1:{getattr(settings, 'haproxy_port', ports.HAPROXY)}",
            pid=str(nginx_dir / "nginx.pid"),
            error_log=str(error_log),
            temp_dir=str(nginx_dir),
            front_door=_front_door(settings, run_dir),
        )
    )
    args = ["nginx", "-p", str(nginx_dir), "-e", str(error_log), "-c", str(config)]
    children.append(
        Child(
            "nginx",
            [*args, "-g", "daemon off;"],
            f"http://127.0.0.1:{settings.nginx_port}/whoami",
            run_dir / "logs" / "nginx.log",
        )
    )
    return children


def _prometheus_child(settings: SuiteSettings, run_dir: Path) -> Child | None:
    """Prometheus scraping the suite, when it is installed; the suite runs the same without it."""
    binary = shutil.which("prometheus")
    if binary is None:
        say("prometheus not found on PATH; running without it. Install: apt-get install prometheus")
        return None
    from services.configs.prometheus import (
        PROMETHEUS_DIR,
        RULES_FILE,
        local_jobs,
        prometheus_command,
        render_prometheus,
    )

    workers = {"push": settings.worker_metrics_port, "pull": settings.worker_metrics_port + 1}
    jobs = local_jobs(
        upload=settings.upload_port,
        chunked_upload=settings.chunked_upload_port,
        origin=settings.origin_port,
        edges=settings.edge_ports,
        redirectors=settings.redirector_ports,
        balancer=settings.balancer_port,
        workers=workers,
    )
    folder = run_dir / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(render_prometheus(jobs, rule_files=[str(PROMETHEUS_DIR / RULES_FILE)]))
    listen = f"0.0.0.0:{settings.prometheus_port}"
    return Child(
        "prometheus",
        prometheus_command(config, folder / "data", listen=listen, binary=binary),
        None,
        run_dir / "logs" / "prometheus.log",
    )


def _wait_ready(children: list[Child], timeout: float) -> Child | None:
    """None when every child answers; otherwise the first that died or never answered."""
    deadline = time.monotonic() + timeout
    pending = [c for c in children if c.ready_url]
    with httpx.Client(timeout=2) as client:
        while pending:
            for child in list(pending):
                assert child.proc is not None
                if child.proc.poll() is not None:
                    return child
                try:
                    if client.get(child.ready_url or "").status_code == 200:
                        pending.remove(child)
                        say(f"{child.name} is ready (pid {child.proc.pid}): {child.ready_url}")
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                return pending[0]
            time.sleep(0.2)
    return None


def make_demo_clip(path: Path, seconds: int = 12) -> Path:
    """A short 720p test pattern with a tone, made by ffmpeg."""
    return synthetic_clip(path, seconds=seconds, size="1280x720", rate=30)


def _demo_account(settings: SuiteSettings) -> DemoAccount:
    """The demo uploader with a fresh password and API key, printed for the operator."""
    from services.cli.provision import demo_account

    account = asyncio.run(demo_account(settings.database_url))
    say(f"demo uploader {account.name!r} ready")
    print(f"\nSign in as:        {account.name}")
    print(f"Password:          {account.password}")
    print(f"API key:           {account.api_key}")
    print(f"Use the key:       export VSP_API_KEY={account.api_key}\n", flush=True)
    return account


def _demo(settings: SuiteSettings, run_dir: Path, account: DemoAccount) -> bool:
    from services.cli.client import ClientError, get_json, stream_upload, wait_ready
    from services.cli.credentials import auth_headers

    clip = make_demo_clip(run_dir / "demo" / "demo.mp4")
    upload_url = f"http://127.0.0.1:{settings.upload_port}"
    origin_url = f"http://127.0.0.1:{settings.origin_port}"
    headers = auth_headers(account.api_key)
    try:
        video = stream_upload(upload_url, clip, title="Demo clip", tags="demo", headers=headers)
        say(f"uploaded demo clip as video {video['id']}; transcoding")
        final = wait_ready(origin_url, video["id"], timeout_seconds=300, headers=headers)
        if final["state"] != "ready":
            say(f"demo video failed: {final.get('error')}")
            return False
        stream = get_json(f"{origin_url}/api/stream/{video['id']}", headers)
    except ClientError as exc:
        say(f"demo failed: {exc}")
        return False
    ladder = ", ".join(r["name"] for r in final["renditions"])
    say(f"demo video {video['id']} is ready ({ladder})")
    print(f"\nPlayer:            {origin_url}/player?video={video['id']}")
    print(f"My videos:         {origin_url}/my  (sign in as the demo uploader)")
    print(f"Upload page:       http://127.0.0.1:{settings.chunked_upload_port}/upload")
    if shutil.which("nginx"):
        front = f"https://127.0.0.1:{settings.front_https_port}"
        print(f"Front door:        {front}/  (self-signed unless FRONT_DOOR_CERT_FILE is set)")
        print(f"                   http://127.0.0.1:{settings.front_http_port}/  (plain HTTP)")
        print(f"Upload through it: {front}/upload")
    print(f"Signed master URL: {stream['master_url']}")
    print(f'Try:               ffplay "{stream["master_url"]}"\n', flush=True)
    return True


def run_suite(*, run_dir: Path, demo: bool = True) -> int:
    """Run everything until Ctrl-C; returns the exit code."""
    settings = SuiteSettings()
    run_dir = run_dir.resolve()
    problems = _check_tools() + asyncio.run(_check_infra(settings))
    if problems:
        for problem in problems:
            say(problem)
        return 2
    from shared.db.migrate import upgrade

    upgrade(settings.database_url)
    say("database migrated")
    account = _demo_account(settings)
    env = dict(os.environ)
    env.setdefault("STORAGE_ROOT", str(run_dir / "objects"))
    env["PYTHONUNBUFFERED"] = "1"
    if "UPLOAD_TLS_CERT_FILE" not in env:
        # h2 over TLS needs a certificate; a self-signed one is made once and reused.
        cert, key = local_certificate(run_dir)
        env["UPLOAD_TLS_CERT_FILE"], env["UPLOAD_TLS_KEY_FILE"] = str(cert), str(key)
        say(f"self-signed TLS certificate (upload, front door): {cert}")
    children = _children(settings, run_dir)
    supervisor = Supervisor(
        children,
        env,
        backoff=settings.suite_restart_backoff_seconds,
        backoff_max=settings.suite_restart_backoff_max_seconds,
        reset=settings.suite_restart_reset_seconds,
    )

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell that started us in the background may have left Ctrl-C ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for child in children:
            start(child, env)
        failed = _wait_ready(children, settings.suite_ready_timeout_seconds)
        if failed is not None:
            say(f"{failed.name} did not start; the end of {failed.log_path}:")
            print(tail(failed.log_path), flush=True)
            return 1
        say(f"logs in {run_dir / 'logs'}")
        # From here on a child that exits is restarted, during the demo too.
        supervisor.start()
        if demo and not _demo(settings, run_dir, account):
            return 1
        # Started after the demo, so it never competes with startup or the first transcode;
        # counters are cumulative, so it still sees what happened before.
        prometheus = _prometheus_child(settings, run_dir)
        if prometheus is not None:
            supervisor.add(prometheus)
            say(f"Prometheus: http://127.0.0.1:{settings.prometheus_port}")
        say("running; a child that exits is restarted; press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        supervisor.stop()
