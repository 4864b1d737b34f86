"""Resumable upload service (8002): tus 1.0.0 under /files, the browser upload page."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.chunked_upload.limits import RequestHeadLimits
from services.chunked_upload.page import page_router
from services.chunked_upload.routes import BASE_PATH, VIDEO_ID_HEADER
from services.chunked_upload.routes import router as tus_router
from services.chunked_upload.settings import Settings, UploadLimits
from services.chunked_upload.sweeper import ExpirySweeper
from shared.http import signin
from shared.http.app import create_app
from shared.http.concurrency import Cap
from shared.http.cors import CorsMiddleware, CorsPolicy
from shared.runtime.resources import Resources
from shared.videos.api import outbox_hooks, video_router
from shared.videos.events import events_cap

_TUS_HEADER = (b"tus-resumable", b"1.0.0")

# What a browser client on another site must be allowed to send and to read (tus 1.0.0, the
# extensions served here, and the request id every service echoes).
CORS_ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
    "X-Request-ID",
    "X-Requested-With",
]
CORS_EXPOSE_HEADERS = [
    "Location",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Expires",
    VIDEO_ID_HEADER,
    "X-Request-ID",
]


class TusResumableHeader:
    """Every tus response, errors included, carries ``Tus-Resumable``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(BASE_PATH):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), _TUS_HEADER]
            await send(message)

        await self.app(scope, receive, send_with_header)


def build(settings: Settings | None = None) -> FastAPI:
    """The chunked_upload app."""
    settings = settings or Settings()
    limits = UploadLimits.from_settings(settings)
    start_outbox, stop_outbox = outbox_hooks()

    async def start_sweeper(app: FastAPI, res: Resources) -> None:
        sweeper = ExpirySweeper(res, limits, settings.chunked_upload_sweep_interval_seconds)
        app.state.sweeper = sweeper
        sweeper.start()

    async def stop_sweeper(app: FastAPI, _: Resources) -> None:
        await app.state.sweeper.stop()

    app = create_app(
        service="chunked_upload",
        settings=settings,
        routers=[
            tus_router,
            page_router(
                settings.chunked_upload_page_endpoints,
                settings.public_origin_url,
                settings.trusted_proxies,
            ),
            signin.router(),
            video_router,
        ],
        uses={"db", "redis", "mq", "storage"},
        on_startup=[start_outbox, start_sweeper],
        on_shutdown=[stop_sweeper, stop_outbox],
        caps=[
            # A creation that carries the first bytes (creation-with-upload) writes as a PATCH.
            Cap(
                "tus_patch",
                frozenset({"PATCH", "POST"}),
                rf"{BASE_PATH}(/[^/]*)?",
                settings.chunked_upload_max_concurrent_patches,
                bodies_only=True,
            ),
            events_cap(settings.events_max_streams),
        ],
    )
    app.state.upload_limits = limits
    app.add_middleware(
        RequestHeadLimits,
        max_target_bytes=settings.chunked_upload_max_target_bytes,
        max_header_bytes=settings.chunked_upload_max_header_bytes,
        max_headers=settings.chunked_upload_max_headers,
    )
    app.add_middleware(TusResumableHeader)
    # Outermost, so preflights are answered before anything else; a tus OPTIONS without
    # Access-Control-Request-Method still reaches the protocol's own capability answer.
    uploads = CorsPolicy(
        settings.chunked_upload_cors_allow_origins,
        methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
        request_headers=CORS_ALLOW_HEADERS,
        exposed_headers=CORS_EXPOSE_HEADERS,
    )
    app.add_middleware(CorsMiddleware, policies=[("/", uploads)])
    return app
