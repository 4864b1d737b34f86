"""Upload service (8001): streamed uploads to the object store."""

from __future__ import annotations

from fastapi import FastAPI

from services.upload.routes import router
from services.upload.service import UploadLimits
from services.upload.settings import Settings
from shared.http.app import create_app
from shared.videos.api import outbox_hooks, video_router


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
    )
    app.state.upload_limits = UploadLimits.from_settings(settings)
    return app
