"""Upload service (8001): streamed uploads to the object store."""

from __future__ import annotations

from fastapi import FastAPI

from services.upload.routes import router
from services.upload.service import UploadLimits
from services.upload.settings import Settings
from shared.http.app import create_app
from shared.http.concurrency import Cap
from shared.videos.api import outbox_hooks, video_router
from shared.videos.events import events_cap


def build(settings: Settings | None = None) -> FastAPI:
    """The upload app."""
    settings = settings or Settings()
    start, stop = outbox_hooks()
    app = create_app(
        service="upload",
        settings=settings,
        routers=[router, video_router],
        uses={"db", "redis", "mq", "storage"},
        on_startup=[start],
        on_shutdown=[stop],
        caps=[
            Cap(
                "upload",
                frozenset({"POST", "PUT"}),
                r"/api/videos(/[^/]+)?",
                settings.upload_max_concurrent_uploads,
            ),
            events_cap(settings.events_max_streams),
        ],
    )
    app.state.upload_limits = UploadLimits.from_settings(settings)
    return app
