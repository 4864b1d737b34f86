"""Run one HTTP service: uvicorn, or Granian for services that take HTTP/2 uploads."""

from __future__ import annotations

import asyncio
import logging

from services.runtime.registry import ServiceSpec
from services.runtime.settings import load_settings
from shared.core.logging import configure_logging
from shared.runtime import servers

log = logging.getLogger(__name__)


def serve_service(spec: ServiceSpec, *, host: str, port: int | None) -> None:
    """Build the service's settings and app, then serve until SIGINT/SIGTERM."""
    settings = load_settings(spec.settings_class())
    configure_logging(spec.name, settings.log_level, json_lines=settings.log_json)
    port = port or int(getattr(settings, spec.port_setting, spec.default_port))
    run = spec.run_function()
    if run is not None:
        run(settings, host=host, port=port)
        return
    app = spec.builder()(settings)
    if spec.http2:
        servers.limit_heap_growth()
        asyncio.run(servers.serve_http2(app, settings, host=host, port=port))
        return
    servers.serve_uvicorn(app, host=host, port=port)
