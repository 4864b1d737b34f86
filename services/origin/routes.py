"""Origin API routes: the stream API and the catalog. Objects are served by ``delivery``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from services.origin import catalog, service
from services.origin.schemas import RefreshRequest, StreamResponse
from services.origin.settings import Settings
from shared.core.signing import Signer
from shared.db.models import VideoState
from shared.http.app import resources
from shared.http.auth import bearer_token, check_admin_token
from shared.http.openapi import error_responses
from shared.runtime.resources import Resources

Res = Annotated[Resources, Depends(resources)]


def settings_of(res: Resources) -> Settings:
    assert isinstance(res.settings, Settings)
    return res.settings


def request_base(request: Request) -> str:
    return str(request.base_url)


def api_router(signer: Signer) -> APIRouter:
    """The stream API and the catalog, signing with the app's one ``signer``."""
    router = APIRouter()

    # 404: no such video; 409: not playable yet (its state is in the body).
    @router.get(
        "/api/stream/{video_id}",
        response_model=StreamResponse,
        tags=["stream"],
        responses=error_responses(404, 409),
    )
    async def stream(
        video_id: uuid.UUID,
        request: Request,
        res: Res,
        mode: Annotated[Literal["query", "token"] | None, Query()] = None,
    ) -> object:
        """Signed master and variant URLs for a ready video (``mode``: query signature or token)."""
        urls = await service.stream_urls(
            res, settings_of(res), signer, video_id, request_base(request), mode
        )
        return urls.__dict__

    @router.post(
        "/api/stream/refresh",
        response_model=StreamResponse,
        tags=["stream"],
        responses=error_responses(404, 409),
    )
    async def refresh(body: RefreshRequest, request: Request, res: Res) -> object:
        """Fresh signatures for a video's URLs."""
        urls = await service.stream_urls(
            res, settings_of(res), signer, body.video_id, request_base(request), body.mode
        )
        return urls.__dict__

    @router.get("/api/videos", tags=["catalog"])
    async def list_videos(
        request: Request,
        res: Res,
        q: Annotated[str | None, Query(max_length=200, description="Search text")] = None,
        state: Annotated[VideoState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Videos newest first; ``q`` searches title, description and tags."""
        settings = settings_of(res)
        return await catalog.list_videos(
            res,
            settings,
            signer,
            request_base(request),
            query=q,
            state=state,
            limit=min(limit, settings.origin_catalog_page_max),
            offset=offset,
        )

    @router.get("/api/videos/{video_id}", tags=["catalog"])
    async def video_details(video_id: uuid.UUID, request: Request, res: Res) -> dict[str, Any]:
        """A video's state, metadata, renditions and live progress."""
        return await catalog.video_details(
            res, settings_of(res), signer, video_id, request_base(request)
        )

    # 503: the objects are gone but the edges could not be told to purge them; delete again.
    @router.delete(
        "/api/videos/{video_id}",
        status_code=204,
        tags=["catalog"],
        responses=error_responses(503),
    )
    async def delete_video(
        video_id: uuid.UUID,
        res: Res,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Delete the video's objects and rows (``Authorization: Bearer <ORIGIN_ADMIN_TOKEN>``)."""
        check_admin_token(
            bearer_token(authorization), settings_of(res).origin_admin_token, "deleting a video"
        )
        await catalog.delete_video(res, video_id)
        return Response(status_code=204)

    return router
