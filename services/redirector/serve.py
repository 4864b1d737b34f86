"""Serve the redirector: its own HTTP/1.1 server on the shared h1 kit.

A redirect is a few hundred bytes of work, so the HTTP server's own cost per request decides
the throughput: ``services.redirector.front`` answers a redirect inside the HTTP parser's
callback on one uvloop thread and hands everything else to the FastAPI app in-process.
"""

from __future__ import annotations

from services.redirector.app import build
from services.redirector.front import run as run_front
from services.redirector.settings import Settings


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    app = build(settings)
    redirector = app.state.redirector if settings.redirector_fast_path else None
    run_front(app, redirector, host=host, port=port, limits=settings.http_limits)
