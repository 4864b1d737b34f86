"""Redirector (8010-8013): the ratio balancer between the CDN and the origin."""

from __future__ import annotations

from fastapi import FastAPI

from services.redirector.routes import router
from services.redirector.service import Redirector
from services.redirector.settings import Settings
from shared.db.engine import Database
from shared.runtime.resources import Resources


def build(settings: Settings | None = None) -> FastAPI:
    """The redirector app; ``app.state.redirector`` is the use case its front answers with."""
    from shared.http.app import create_app

    settings = settings or Settings()
    redirector = Redirector(settings)

    async def start(_: FastAPI, __: Resources) -> None:
        # Its own engine rather than the factory's: a redirector stays ready with the database
        # down, answering from the configuration it holds.
        redirector.db = Database.from_settings(settings, pool_size=2)
        await redirector.start()

    async def stop(_: FastAPI, __: Resources) -> None:
        await redirector.stop()
        if redirector.db is not None:
            await redirector.db.close()

    app = create_app(
        service="redirector",
        settings=settings,
        routers=[router],
        on_startup=[start],
        on_shutdown=[stop],
    )
    app.state.redirector = redirector
    return app
