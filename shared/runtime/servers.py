"""Run a service's ASGI app under Granian (the default for hot paths) or uvicorn."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.core.logging import configure_logging
from shared.core.settings import BaseServiceSettings

log = logging.getLogger(__name__)

# As long as nginx keeps idle connections: pooled clients (players, the balancer, haproxy)
# then rarely reuse a connection the server is closing at that moment.
KEEP_ALIVE_SECONDS = 75


def serve_uvicorn(app: Any, *, host: str, port: int) -> None:
    """Serve an ASGI app with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


def granian_factory(
    service: str, settings_class: type[BaseServiceSettings], build: Callable[[Any], Any]
) -> Any:
    """What Granian's worker process calls: logging, settings, then the app."""
    settings = settings_class()
    configure_logging(service, settings.log_level, json_lines=settings.log_json)
    return build(settings)


def run(
    settings: BaseServiceSettings,
    *,
    server: str,
    factory: str,
    build: Callable[[Any], Any],
    host: str,
    port: int,
    **granian_options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM; ``factory`` is the ``module:function`` Granian imports."""
    if server == "uvicorn":
        serve_uvicorn(build(settings), host=host, port=port)
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # ``interface`` may name RSGI for apps that speak it (the edge).
    options: dict[str, Any] = {
        "runtime_threads": 1,
        "interface": Interfaces.ASGI,
        **granian_options,
    }
    Granian(
        factory,
        factory=True,
        address=host,
        port=port,
        workers=1,
        loop=Loops.uvloop,
        websockets=False,
        backlog=2048,
        log_access=False,
        # A stop asked for while the worker still starts is otherwise waited on forever.
        workers_kill_timeout=5,
        **options,
    ).serve()


def limit_heap_growth() -> None:
    """Keep a streaming server's memory flat under glibc (a no-op elsewhere).

    Request bodies arrive as many short-lived buffers allocated from several threads; with
    glibc's defaults each thread gets its own arena and freed blocks stay mapped, so resident
    memory creeps up with every large upload. Two arenas and a fixed mmap threshold (big
    buffers are mapped and unmapped, never parked in the heap) keep it flat.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_arena_max, 2)
    mallopt(m_mmap_threshold, 128 * 1024)
    mallopt(m_trim_threshold, 1024 * 1024)


async def serve_http2(app: Any, settings: Any, *, host: str, port: int) -> None:
    """Granian in this process: HTTP/1.1 and h2c on ``port``, h2 by ALPN on the TLS port.

    Both listeners share one app and one lifespan (one set of clients), so the lifespan runs
    here and Granian serves the app without it (the ``asginl`` interface).
    """
    from granian.constants import HTTPModes, Interfaces, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings
    from granian.server.embed import Server

    # Wide flow-control windows: the default 1 MiB window stalls a fast uploader every RTT.
    h2 = HTTP2Settings(
        initial_stream_window_size=int(getattr(settings, "upload_h2_stream_window_bytes", 2**23)),
        initial_connection_window_size=int(
            getattr(settings, "upload_h2_connection_window_bytes", 2**24)
        ),
        max_concurrent_streams=100,
        # Granian's default lets one stream's header list reach 16 MiB.
        max_headers_size=int(getattr(settings, "upload_h2_max_headers_bytes", 64 * 1024)),
    )
    # A bigger read buffer hands an HTTP/1.1 body to the app in fewer, bigger chunks.
    h1 = HTTP1Settings(
        max_buffer_size=int(getattr(settings, "upload_http1_buffer_bytes", 8192 + 4096 * 100))
    )
    common: dict[str, Any] = {
        "interface": Interfaces.ASGINL,
        "http": HTTPModes.auto,
        "http1_settings": h1,
        "http2_settings": h2,
        "websockets": False,
        "log_enabled": False,
        "backlog": 1024,
    }
    servers = [Server(app, address=host, port=port, **common)]
    log.info("serving HTTP/1.1 and h2c on %s:%d", host, port)
    tls: tuple[int, Path, Path] | None = (
        settings.tls_listener() if hasattr(settings, "tls_listener") else None
    )
    if tls is not None:
        tls_port, cert, key = tls
        servers.append(
            Server(
                app,
                address=host,
                port=tls_port,
                ssl_cert=Path(cert),
                ssl_key=Path(key),
                ssl_protocol_min=SSLProtocols.tls12,
                **common,
            )
        )
        log.info("serving h2 and HTTP/1.1 over TLS on %s:%d", host, tls_port)
    async with app.router.lifespan_context(app):
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(
                signum,
                lambda: [server.stop() for server in servers],  # type: ignore[no-untyped-call]
            )
        await asyncio.gather(*(server.serve() for server in servers))
