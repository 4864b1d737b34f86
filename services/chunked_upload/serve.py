"""Serve the resumable upload service with Granian, its header bounds set.

A header block that does not fit ``CHUNKED_UPLOAD_HTTP1_BUFFER_BYTES`` (or more than 100
headers, Granian's fixed maximum) is answered 431 by Granian itself, before the app runs;
``services.chunked_upload.limits`` answers smaller excesses with the platform's JSON 431.
"""

from __future__ import annotations

from typing import Any

from services.chunked_upload.settings import Settings
from shared.runtime import servers
from shared.runtime.servers import KEEP_ALIVE_SECONDS


def _build(settings: Settings) -> Any:
    from services.chunked_upload.app import build

    return build(settings)


def app() -> Any:
    """Granian's factory, called in its worker process."""
    return servers.granian_factory("chunked_upload", Settings, _build)


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    from granian.http import HTTP1Settings, HTTP2Settings

    header_bytes = settings.chunked_upload_http1_buffer_bytes
    servers.run(
        settings,
        server="granian",
        factory="services.chunked_upload.serve:app",
        build=_build,
        host=host,
        port=port,
        # Idle connections are kept as long as by the platform's other servers.
        http1_settings=HTTP1Settings(
            max_buffer_size=header_bytes, header_read_timeout=KEEP_ALIVE_SECONDS * 1000
        ),
        http2_settings=HTTP2Settings(max_headers_size=header_bytes),
    )
