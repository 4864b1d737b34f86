"""Balancer (8090): metrics-aware proxy in front of the edges, with a live dashboard.

The app built here serves the balancer's own paths; viewer requests never reach it (the
listener in ``front`` proxies them, see ``serve``).
"""

from __future__ import annotations

from fastapi import FastAPI

from services.balancer.routes import ops_router
from services.balancer.service import Balancer
from services.balancer.settings import Settings
from shared.http.app import create_app
from shared.http.faults import ADMIN_PATH
from shared.runtime.resources import Resources


def build(settings: Settings | None = None) -> FastAPI:
    """The app: stats, dashboard, WebSocket, metrics, health; it owns the running balancer."""
    settings = settings or Settings()

    async def start(app: FastAPI, _: Resources) -> None:
        app.state.balancer = Balancer(settings)
        app.state.balancer.start()

    async def stop(app: FastAPI, _: Resources) -> None:
        await app.state.balancer.stop()

    return create_app(
        service="balancer",
        settings=settings,
        routers=[ops_router],
        on_startup=[start],
        on_shutdown=[stop],
    )


def own_paths(app: FastAPI) -> frozenset[str]:
    """Paths the app answers itself (plus everything under /dashboard/)."""
    routes = [*app.routes, *ops_router.routes]
    paths = (getattr(route, "path", None) for route in routes)
    return frozenset([ADMIN_PATH, *(path for path in paths if isinstance(path, str))])
