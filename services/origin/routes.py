"""Origin API routes: the stream API and the catalog. Objects are served by ``delivery``."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.origin import catalog, service
from services.origin.schemas import TRACK_ID_PATTERN, RefreshRequest, StreamResponse, VideoEdit
from services.origin.settings import Settings, parse_bitrates
from shared.core.errors import BadRequest
from shared.core.signing import Signer
from shared.db.models import VideoState
from shared.http.app import resources
from shared.http.auth import (
    Credentials,
    OptionalPrincipal,
    Principal,
    bearer_token,
    require_principal,
)
from shared.http.clients import public_base_url
from shared.http.openapi import error_responses
from shared.runtime.resources import Resources

Res = Annotated[Resources, Depends(resources)]
# PostgreSQL's OFFSET is a bigint: a larger one is a 422, not a database error.
MAX_OFFSET = 2**63 - 1


def settings_of(res: Resources) -> Settings:
    assert isinstance(res.settings, Settings)
    return res.settings


def request_base(request: Request, res: Resources) -> str:
    """Where the viewer reached the origin: through the front door, its scheme and host."""
    return public_base_url(request, res.settings.trusted_proxies)


# The streaming gateway's health answer, kept as it was for its monitors.
GATEWAY_HEALTH = {"status": "healthy", "service": "Streaming Gateway", "version": "0.1.0"}


def bitrates_query(
    available_bitrates: Annotated[
        str | None,
        Query(
            max_length=400,
            description="Comma-separated variant bitrates to list, e.g. 256000,160000,96000",
        ),
    ] = None,
) -> list[int] | None:
    """FastAPI dependency: the gateway's ``available_bitrates`` query (400 when malformed)."""
    if available_bitrates is None or not available_bitrates.strip():
        return None
    try:
        return parse_bitrates(available_bitrates)
    except ValueError as exc:
        raise BadRequest(str(exc), field="available_bitrates") from exc


async def manager(request: Request, res: Res, credentials: Credentials) -> Principal:
    """FastAPI dependency: who changes a video, the operator (``ORIGIN_ADMIN_TOKEN``) or an
    account (401 without a credential; the catalog checks it owns the video)."""
    token = bearer_token(request.headers.get("authorization"))
    expected = settings_of(res).origin_admin_token
    if token is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return catalog.OPERATOR
    return await require_principal(request, credentials)


Manager = Annotated[Principal, Depends(manager)]


def api_router(signer: Signer) -> APIRouter:
    """The stream API and the catalog, signing with the app's one ``signer``."""
    router = APIRouter()

    @router.get("/health", tags=["stream"])
    async def health() -> dict[str, str]:
        """The streaming gateway's liveness answer (``/healthz`` is the platform's)."""
        return GATEWAY_HEALTH

    # 404: no such video; 409: not playable yet (its state is in the body).
    @router.get(
        "/api/stream/{video_id}",
        response_model=StreamResponse,
        tags=["stream"],
        responses=error_responses(404, 409),
    )
    async def stream(
        video_id: Annotated[str, Path(pattern=TRACK_ID_PATTERN)],
        request: Request,
        res: Res,
        viewer: OptionalPrincipal,
        bitrates: Annotated[list[int] | None, Depends(bitrates_query)],
        mode: Annotated[Literal["query", "token"] | None, Query()] = None,
        artist_id: Annotated[
            str | None, Query(max_length=32, description="The channel the video must be of")
        ] = None,
    ) -> object:
        """Signed master and variant URLs for a ready video (``mode``: query signature or token).

        A private video's URLs go to its owner and admins only (404 to anyone else); an id
        that names no video, in any form, is a 404.
        """
        urls = await service.stream_urls(
            res,
            settings_of(res),
            signer,
            video_id,
            request_base(request, res),
            mode,
            viewer=viewer,
            channel=artist_id,
            bitrates=bitrates,
        )
        return urls.__dict__

    @router.post(
        "/api/stream/refresh",
        response_model=StreamResponse,
        tags=["stream"],
        responses=error_responses(404, 409),
    )
    async def refresh(
        body: RefreshRequest, request: Request, res: Res, viewer: OptionalPrincipal
    ) -> object:
        """Fresh signatures for a video's URLs."""
        urls = await service.stream_urls(
            res,
            settings_of(res),
            signer,
            body.video,
            request_base(request, res),
            body.mode,
            viewer=viewer,
            channel=body.artist_id,
            bitrates=body.available_bitrates,
        )
        return urls.__dict__

    @router.get("/api/videos", tags=["catalog"])
    async def list_videos(
        request: Request,
        res: Res,
        viewer: OptionalPrincipal,
        q: Annotated[str | None, Query(max_length=200, description="Search text")] = None,
        state: Annotated[VideoState | None, Query()] = None,
        mine: Annotated[bool, Query(description="Only the caller's own videos")] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        """Public videos and the caller's own, newest first; ``q`` searches title, description
        and tags."""
        settings = settings_of(res)
        return await catalog.list_videos(
            res,
            settings,
            signer,
            request_base(request, res),
            query=q,
            state=state,
            viewer=viewer,
            mine=mine,
            limit=min(limit, settings.origin_catalog_page_max),
            offset=offset,
        )

    @router.get("/api/videos/{video_id}", tags=["catalog"])
    async def video_details(
        video_id: uuid.UUID, request: Request, res: Res, viewer: OptionalPrincipal
    ) -> dict[str, Any]:
        """A video's state, metadata, renditions and live progress (private: its owner only)."""
        return await catalog.video_details(
            res, settings_of(res), signer, video_id, request_base(request, res), viewer
        )

    @router.patch("/api/videos/{video_id}", tags=["catalog"], responses=error_responses(403, 409))
    async def edit_video(
        video_id: uuid.UUID, edit: VideoEdit, request: Request, res: Res, actor: Manager
    ) -> dict[str, Any]:
        """Change a video's title, description, tags, privacy or gateway track id (its owner
        or an admin; 409 when another video holds the track id)."""
        return await catalog.edit_video(
            res, settings_of(res), signer, video_id, request_base(request, res), edit, actor
        )

    # 503: the objects are gone but the edges could not be told to purge them; delete again.
    @router.delete(
        "/api/videos/{video_id}",
        status_code=204,
        tags=["catalog"],
        responses=error_responses(403, 503),
    )
    async def delete_video(video_id: uuid.UUID, res: Res, actor: Manager) -> Response:
        """Delete the video's objects and rows (its owner, an admin, or an operator with
        ``Authorization: Bearer <ORIGIN_ADMIN_TOKEN>``)."""
        await catalog.delete_video(res, video_id, actor)
        return Response(status_code=204)

    return router
