"""Upload throughput per protocol against the disk's synced write speed and nginx, side by side.

For HTTP/1.1, h2c (prior knowledge) and h2 over TLS, curl PUTs the same file to the upload service
(Granian, storing to the filesystem store with fsync and finalizing), to a minimal streaming app
on the same Granian server and settings (sha-256, write, fsync, 201: what any upload server must
do, so the ceiling of the server itself), to nginx's DAV module (writing the body to disk, no
fsync), and to the same nginx writing into tmpfs: the most curl and loopback TCP carry on this
machine, which no server can beat. Each round measures the disk's synced write of the same size,
in 1 MiB writes as the store makes them, right before the uploads it is compared with. Times are
curl's own ``time_total``: the whole request as the client sees it, 201 received. Each server's
best of ``--rounds`` counts. The upload service's peak RSS is sampled throughout.

The front door (nginx as the platform runs it, its configuration rendered by
``services.configs.proxies``) takes the same file with ``curl --http2`` in the same rounds and
streams it to the same upload service over HTTP/1.1: compared with nginx taking the PUT itself
over h2 (the goal is at least half its speed) and with the service's own h2 listener.

    python -m load_tests.bench_upload --size-mib 1024

Needs PostgreSQL, Redis and RabbitMQ as for ``vsp up``; the database is created and migrated first.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from starlette.types import Receive, Scope, Send

from load_tests.harness import Comparison, Report, command_line
from services.upload.settings import Settings
from services.upload.tls import ensure_self_signed
from shared.db.migrate import upgrade
from tests.support.accounts import create_account
from tests.support.media import MIB, make_clip, padded_media
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.proxies import start_front_door

# tmpfs: where nginx's copy of the upload shows the ceiling of the client and loopback TCP.
_MEMORY_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None

PROTOCOLS = {
    "HTTP/1.1": ("http", ["--http1.1"], 0.5),
    "h2c": ("h2c", ["--http2-prior-knowledge"], 0.2),
    "h2 (TLS)": ("https", ["--http2"], 0.2),
}

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx-{tag}.pid;
error_log {root}/nginx-{tag}-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {store}/nginx-body;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{ listen 127.0.0.1:{http}; location / {{ {dav} }} }}
    server {{ listen 127.0.0.1:{h2c} http2; location / {{ {dav} }} }}
    server {{ listen 127.0.0.1:{https} ssl http2; location / {{ {dav} }} }}
}}
"""
DAV = "root {store}/nginx-files; dav_methods PUT; create_full_put_path on;"
# The protocol the front door is measured in: h2 over TLS, as browsers and ``curl --http2`` speak.
FRONT_DOOR_PROTOCOL = "h2 (TLS)"
FRONT_DOOR_GOAL = 0.5


def disk_synced_seconds(folder: Path, size: int) -> float:
    """Seconds writing ``size`` bytes in 1 MiB blocks to a new file, fsync included."""
    block = os.urandom(MIB)
    path = folder / "disk-baseline.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(size // MIB):
            os.write(fd, block)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()


def curl_put(path: Path, url: str, args: list[str], cert: Path) -> float:
    """Seconds curl reports for the whole PUT of ``path`` (the response must be a 2xx)."""
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
            "-T",
            str(path),
            "--cacert",
            str(cert),
            "-H",
            "Content-Type: application/octet-stream",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    status, _, seconds = done.stdout.partition(" ")
    if not status.startswith("2"):
        raise RuntimeError(f"PUT {url} answered {status}: {done.stderr}")
    return float(seconds)


class MinimalUploadApp:
    """The least an upload server does: stream the body to a file with sha-256, fsync, 201."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, answer = 201, b""
        if scope["method"] == "PUT":
            digest = hashlib.sha256()
            path = self.folder / "minimal-upload.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                more = True
                while more:
                    message = await receive()
                    body = message.get("body", b"")
                    more = message.get("more_body", False)
                    digest.update(body)
                    os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            answer = digest.hexdigest().encode()
        else:
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})


def serve_minimal(port: int, folder: Path) -> None:
    """Serve MinimalUploadApp exactly as the upload service is served (same Granian settings)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from services.upload.settings import Settings
    from shared.runtime.servers import limit_heap_growth, serve_http2

    app = Starlette(routes=[Mount("/", app=MinimalUploadApp(folder))])
    limit_heap_growth()
    asyncio.run(serve_http2(app, Settings(), host="127.0.0.1", port=port))


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)


def _start_nginx(
    procs: Processes, root: Path, cert: Path, key: Path, store: Path, tag: str
) -> dict[str, str]:
    """nginx taking the PUT with its DAV module into ``store`` (bodies and files alike); the URL
    to PUT to per protocol."""
    ports = {"http": free_port(), "h2c": free_port(), "https": free_port()}
    for folder in (root, store):
        folder.chmod(0o755)  # nginx workers run as an unprivileged user
    for folder in ("nginx-body", "nginx-files"):
        (store / folder).mkdir(mode=0o777)
        (store / folder).chmod(0o777)
    conf = root / f"nginx-{tag}.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=root,
            store=store,
            tag=tag,
            cert=cert,
            key=key,
            dav=DAV.format(store=store),
            **ports,
        )
    )
    procs.start(
        f"nginx-{tag}",
        ["nginx", "-c", str(conf), "-p", str(root)],
        ready_url=f"http://127.0.0.1:{ports['http']}/",
        ready_statuses=range(100, 500),  # any answer but a server error: nginx is up
    )
    scheme = {"http": "http", "h2c": "http", "https": "https"}
    return {k: f"{scheme[k]}://127.0.0.1:{p}/upload.bin" for k, p in ports.items()}


def _urls(base: str, tls_port: int, path: str) -> dict[str, str]:
    """Where to PUT per protocol: ``base`` (plain HTTP, h2c alike) and TLS on ``tls_port``."""
    return {
        "http": f"{base}{path}",
        "h2c": f"{base}{path}",
        "https": f"https://127.0.0.1:{tls_port}{path}",
    }


def _front_door_rows(name: str, mb_s: dict[str, float]) -> list[Comparison]:
    """The front door against nginx taking the PUT itself and against the service's own h2."""
    return [
        Comparison(
            "h2 through the front door vs nginx PUT (h2)",
            "MB/s",
            mb_s["front"],
            mb_s["nginx"],
            f"nginx {name}",
            goal_ratio=FRONT_DOOR_GOAL,
            notes=f"goal >= {FRONT_DOOR_GOAL}x; nginx h2 -> HTTP/1.1 -> upload service",
        ),
        Comparison(
            "h2 through the front door vs the service's own h2 listener",
            "MB/s",
            mb_s["front"],
            mb_s["ours"],
            f"upload service {name}",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the table and write results/bench_upload.json."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_upload")
    parser.add_argument("--size-mib", type=int, default=1024, help="Size of the uploaded file.")
    parser.add_argument("--rounds", type=int, default=2, help="Uploads per server and protocol.")
    parser.add_argument("--serve-minimal", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_minimal:
        serve_minimal(args.serve_minimal, args.folder)
        return
    size = args.size_mib * MIB
    upgrade(Settings().database_url)
    # The upload service takes uploads from accounts only: one of the benchmark's own.
    account = create_account({"DATABASE_URL": Settings().database_url})
    ours_auth = ["-H", f"Authorization: Bearer {account.api_key}"]
    root = Path(tempfile.mkdtemp(prefix="vsp-bench-upload-"))
    memory: Path | None = None
    cert, key = root / "cert.pem", root / "key.pem"
    procs = Processes(
        root / "logs",
        {
            **os.environ,
            "STORAGE_ROOT": str(root / "objects"),
            "UPLOAD_MAX_BYTES": str(size * 2),
            "UPLOAD_TLS_CERT_FILE": str(cert),
            "UPLOAD_TLS_KEY_FILE": str(key),
            "LOG_LEVEL": "WARNING",
        },
    )
    try:
        ensure_self_signed(cert, key)
        clip = make_clip(root / "clip.mp4", seconds=2, size="320x180")
        source = padded_media(clip, root / "upload.mp4", size, random=False)

        tls_port = free_port()
        ours = procs.service("upload", env={"UPLOAD_TLS_PORT": str(tls_port)})
        ours_urls = _urls(ours.url, tls_port, "/api/videos")
        minimal_ports = {"http": free_port(), "https": free_port()}
        (root / "minimal").mkdir()
        procs.start(
            "minimal",
            [
                sys.executable,
                "-m",
                "load_tests.bench_upload",
                "--serve-minimal",
                str(minimal_ports["http"]),
                "--folder",
                str(root / "minimal"),
            ],
            ready_url=f"http://127.0.0.1:{minimal_ports['http']}/",
            env={"UPLOAD_TLS_PORT": str(minimal_ports["https"])},
        )
        minimal_urls = _urls(
            f"http://127.0.0.1:{minimal_ports['http']}", minimal_ports["https"], "/upload"
        )
        nginx_urls = _start_nginx(procs, root, cert, key, root, "disk")
        # The same nginx into memory: what curl and loopback TCP carry at best on this machine.
        memory = Path(tempfile.mkdtemp(prefix="vsp-bench-upload-", dir=_MEMORY_DIR))
        memory_urls = _start_nginx(procs, root, cert, key, memory, "memory")

        # The front door over the same upload service; the origin only answers its credential
        # check, once per upload; nothing else behind it is measured.
        origin = procs.service("origin")
        front = start_front_door(procs, root / "front-door", origin=origin.url, upload=ours.url)
        front_url = f"{front.https}/api/videos"

        comparisons: list[Comparison] = []
        peaks: dict[str, float] = {}
        for name, (kind, curl_args, goal) in PROTOCOLS.items():
            best = {"disk": 1e9, "ours": 1e9, "minimal": 1e9, "nginx": 1e9, "memory": 1e9}
            with_front = name == FRONT_DOOR_PROTOCOL
            if with_front:
                best["front"] = 1e9
            peak = 0
            for _ in range(args.rounds):
                best["disk"] = min(best["disk"], disk_synced_seconds(root, size))
                sampler = PeakRss(ours.pid)
                sampler.start()
                best["ours"] = min(
                    best["ours"], curl_put(source, ours_urls[kind], [*curl_args, *ours_auth], cert)
                )
                sampler.running = False
                sampler.join()
                peak = max(peak, sampler.peak)
                shutil.rmtree(root / "objects" / "videos", ignore_errors=True)
                best["minimal"] = min(
                    best["minimal"], curl_put(source, minimal_urls[kind], curl_args, cert)
                )
                best["nginx"] = min(
                    best["nginx"], curl_put(source, nginx_urls[kind], curl_args, cert)
                )
                (root / "nginx-files" / "upload.bin").unlink(missing_ok=True)
                best["memory"] = min(
                    best["memory"], curl_put(source, memory_urls[kind], curl_args, cert)
                )
                (memory / "nginx-files" / "upload.bin").unlink(missing_ok=True)
                if with_front:
                    best["front"] = min(
                        best["front"],
                        curl_put(source, front_url, [*curl_args, *ours_auth], front.certificate),
                    )
                    shutil.rmtree(root / "objects" / "videos", ignore_errors=True)
            peaks[name] = peak / MIB
            mb_s = {k: size / seconds / 1e6 for k, seconds in best.items()}
            comparisons += [
                Comparison(
                    f"{name} vs disk (fsync)",
                    "MB/s",
                    mb_s["ours"],
                    mb_s["disk"],
                    "disk synced write",
                    goal_ratio=goal,
                    notes=f"peak RSS {peaks[name]:.0f} MiB",
                ),
                Comparison(
                    f"{name} vs minimal app",
                    "MB/s",
                    mb_s["ours"],
                    mb_s["minimal"],
                    f"minimal app {name}, same server",
                    notes=f"minimal app vs disk {mb_s['minimal'] / mb_s['disk']:.2f}x",
                ),
                Comparison(
                    f"{name} vs nginx PUT", "MB/s", mb_s["ours"], mb_s["nginx"], f"nginx {name}"
                ),
                Comparison(
                    f"{name} vs transport ceiling",
                    "MB/s",
                    mb_s["ours"],
                    mb_s["memory"],
                    f"nginx {name} into tmpfs",
                    notes=f"ceiling vs disk {mb_s['memory'] / mb_s['disk']:.2f}x",
                ),
            ]
            if with_front:
                comparisons += _front_door_rows(name, mb_s)
        report = Report(
            "bench_upload",
            command_line(),
            comparisons,
            extra={"size_bytes": size, "rounds": args.rounds, "peak_rss_mib": peaks},
        )
        report.write()
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)
        if memory is not None:
            shutil.rmtree(memory, ignore_errors=True)


if __name__ == "__main__":
    main()
