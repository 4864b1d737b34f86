"""Serve the redirector: its own HTTP/1.1 server (default), Granian or uvicorn.

A redirect is a few hundred bytes of work, so the HTTP server's own cost per request decides
the throughput. The redirector's own server (``services.redirector.server``) answers a redirect
inside the HTTP parser's callback on one uvloop thread; Granian (Rust HTTP, a hand-off to the
Python thread per request) and uvicorn (an ASGI task per request) run the same app for
comparison. The Redirector section of docs/BENCHMARKS.md measures all three.
"""

from __future__ import annotations

from typing import Any

from services.redirector.settings import Settings
from shared.runtime import servers


def _build(settings: Settings) -> Any:
    from services.redirector.app import build

    return build(settings)


def app() -> Any:
    """Granian's factory, called in its worker process."""
    return servers.granian_factory("redirector", Settings, _build)


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM with the server ``REDIRECTOR_SERVER`` names."""
    if settings.redirector_server == "asyncio":
        from services.redirector.asgi import FastRedirect
        from services.redirector.server import run as run_own

        built = _build(settings)
        # The server answers redirects itself; the wrapper would only see the other requests.
        if isinstance(built, FastRedirect):
            run_own(built.app, built.redirector, host=host, port=port)
        else:
            run_own(built, None, host=host, port=port)
        return
    from granian.constants import RuntimeModes

    servers.run(
        settings,
        server=settings.redirector_server,
        factory="services.redirector.serve:app",
        build=_build,
        host=host,
        port=port,
        runtime_threads=1,
        # One thread for Rust I/O and Python: no hand-off between threads per request, about
        # a quarter less CPU per redirect than the default here.
        runtime_mode=RuntimeModes.st,
    )
