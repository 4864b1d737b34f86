"""Origin (8003): signed HLS delivery, stream URLs, the catalog and the player page."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Mount

from services.origin import accounts, captions, manage, player, posters, webhooks
from services.origin.delivery import OriginDelivery
from services.origin.routes import api_router
from services.origin.settings import Settings
from services.origin.webhook_dispatcher import dispatcher_hooks
from shared.core.signing import Signer
from shared.http import signin
from shared.http.app import create_app
from shared.http.cors import MEDIA_REQUEST_HEADERS, CorsMiddleware, CorsPolicy
from shared.http.middleware import BodyLimit


def build(settings: Settings | None = None) -> FastAPI:
    """The origin app."""
    settings = settings or Settings()
    # One signer for the whole app: object delivery, signed playlists, stream URLs, posters.
    signer = Signer.from_settings(settings)
    start_dispatcher, stop_dispatcher = dispatcher_hooks(settings)
    app = create_app(
        service="origin",
        settings=settings,
        routers=[
            api_router(signer),
            signin.router(),
            accounts.router(),
            player.router(settings),
            manage.router(),
            webhooks.router(),
            captions.router(),
            posters.router(signer),
        ],
        # The broker announces deletions to the edges.
        uses={"db", "redis", "storage", "mq"},
        on_startup=[start_dispatcher],
        on_shutdown=[stop_dispatcher],
    )
    # First in the route table: every segment request takes this path, so it should not be
    # matched against every API route before it.
    delivery = OriginDelivery(settings, signer)
    app.router.routes.insert(0, Mount("/origin", app=delivery, name="origin"))
    app.mount("/player/assets", player.assets(), name="player-assets")
    # Players on other sites fetch playlists and segments with XHR, so media answers the sites
    # of CORS_ALLOWED_ORIGINS as the edges and the balancer do. The API has its own list; DELETE
    # is left out so no other site can make a visitor's browser delete videos.
    api = CorsPolicy(
        settings.origin_cors_allow_origins,
        methods=["GET", "HEAD", "POST"],
        request_headers=[*MEDIA_REQUEST_HEADERS, "Content-Type", "Authorization"],
    )
    media = CorsPolicy(settings.cors_allowed_origins)
    app.add_middleware(CorsMiddleware, policies=[("/origin/", media), ("/", api)])
    # The origin takes no uploads: every body it reads is a small JSON or form, a caption file
    # (ORIGIN_CAPTION_MAX_BYTES) or a poster (ORIGIN_POSTER_MAX_BYTES).
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.origin_max_body_bytes,
        routes=[captions.body_limit(settings), posters.body_limit(settings)],
    )
    return app
