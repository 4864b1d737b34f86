"""Serve the origin with Granian (default) or uvicorn.

Under Granian whole segments of the filesystem store leave through the ``http.response.pathsend``
extension, so their bytes never pass through Python; the Origin section of docs/BENCHMARKS.md
measures both servers against nginx.
"""

from __future__ import annotations

from typing import Any

from services.origin.settings import Settings
from shared.runtime import servers


def _build(settings: Settings) -> Any:
    from services.origin.app import build

    return build(settings)


def app() -> Any:
    """Granian's factory, called in its worker process."""
    return servers.granian_factory("origin", Settings, _build)


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM with the server ``ORIGIN_SERVER`` names."""
    servers.run(
        settings,
        server=settings.origin_server,
        factory="services.origin.serve:app",
        build=_build,
        host=host,
        port=port,
        runtime_threads=settings.origin_runtime_threads,
    )
