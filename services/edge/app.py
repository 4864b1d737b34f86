"""Edge (8004, 8005, ...): a pull-through cache of the origin in front of viewers."""

from __future__ import annotations

from fastapi import FastAPI

from services.edge import events
from services.edge.routes import router
from services.edge.rsgi import EdgeRSGI
from services.edge.service import Edge
from services.edge.settings import Settings
from shared.core.signing import Signer
from shared.http.app import create_app
from shared.http.cors import CorsPolicy
from shared.mq.broker import Broker
from shared.runtime.resources import Resources


def build(settings: Settings | None = None) -> EdgeRSGI:
    """The edge under Granian: the RSGI object route in front of the platform app."""
    settings = settings or Settings()
    # One signer for the object route and the edge's own origin requests.
    signer = Signer.from_settings(settings)
    cors = CorsPolicy(settings.cors_allowed_origins)
    return EdgeRSGI(platform_app(settings, signer), signer, cors)


def platform_app(settings: Settings, signer: Signer) -> FastAPI:
    """Health, metrics and the admin API, with the lifespan that opens the cache."""

    async def start(app: FastAPI, res: Resources) -> None:
        edge = Edge(settings, res.need_http(), signer)
        await edge.start()
        app.state.edge = edge
        # Not a client the edge needs to serve: it connects in the background.
        follower = events.EventFollower(edge, Broker.from_settings(settings))
        follower.start()
        app.state.events = follower

    async def stop(app: FastAPI, _: Resources) -> None:
        follower: events.EventFollower | None = getattr(app.state, "events", None)
        if follower is not None:
            await follower.stop()
        edge: Edge | None = getattr(app.state, "edge", None)
        if edge is not None:
            await edge.stop()

    return create_app(
        service="edge",
        settings=settings,
        routers=[router],
        uses={"http"},
        on_startup=[start],
        on_shutdown=[stop],
    )
