"""Serve the edge with Granian's RSGI interface.

A cache hit is little more than a lookup and a send, so the server's own cost per response
decides the requests per second; the Edge section of docs/BENCHMARKS.md measures the edge
against nginx proxy_cache.
"""

from __future__ import annotations

from typing import Any

from services.edge.settings import Settings
from shared.runtime import servers
from shared.runtime.servers import KEEP_ALIVE_SECONDS


def _build(settings: Settings) -> Any:
    from services.edge.app import build

    return build(settings)


def app() -> Any:
    """Granian's factory, called in its worker process."""
    return servers.granian_factory("edge", Settings, _build)


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    from granian.constants import Interfaces, RuntimeModes
    from granian.http import HTTP1Settings

    servers.run(
        settings,
        server="granian",
        factory="services.edge.serve:app",
        build=_build,
        host=host,
        port=port,
        interface=Interfaces.RSGI,
        runtime_threads=1,
        runtime_mode=RuntimeModes.st,
        # Granian closes a connection idle this long (30 s by default); keep it as long as
        # the other servers of the platform, so haproxy and the balancer rarely reuse one the
        # edge is closing.
        http1_settings=HTTP1Settings(header_read_timeout=KEEP_ALIVE_SECONDS * 1000),
    )
