"""Redirector routes: the redirect (framework path), the configuration and the instance id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from services.redirector.decision import viewer_key
from services.redirector.schemas import ConfigUpdate, ConfigView
from services.redirector.service import Redirector
from shared.http.auth import bearer_token, check_admin_token

router = APIRouter()


async def redirector(request: Request) -> Redirector:
    """FastAPI dependency: this instance's redirector."""
    state: Redirector = request.app.state.redirector
    return state


Instance = Annotated[Redirector, Depends(redirector)]


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Refuse configuration changes without the admin bearer token."""
    expected = request.app.state.redirector.settings.redirector_admin_token
    check_admin_token(bearer_token(authorization), expected, "changing the configuration")


Admin = Depends(require_admin)


@router.api_route("/", methods=["GET", "HEAD"], response_model=None)
async def root(
    request: Request,
    instance: Instance,
    video: Annotated[str | None, Query(description="The origin URL of the video")] = None,
) -> Response | ConfigView:
    """With ``video``: redirect to the CDN or the origin. Without: the configuration."""
    if video is None and "video" not in request.query_params:
        return instance.view()
    client = request.client.host if request.client else None
    headers = request.headers
    viewer = viewer_key(headers.get("x-viewer-id"), headers.get("x-forwarded-for"), client)
    answer = instance.redirect(video, viewer)
    return Response(
        status_code=answer.status,
        headers={"Location": answer.location, "Cache-Control": answer.cache_control},
    )


@router.get("/config")
async def get_config(instance: Instance) -> ConfigView:
    """The configuration this instance answers with."""
    return instance.view()


@router.post("/", dependencies=[Admin])
@router.post("/config", dependencies=[Admin])
async def change_config(body: ConfigUpdate, instance: Instance) -> ConfigView:
    """Change the configuration of every instance (fields left out keep their value)."""
    await instance.update(body)
    return instance.view()


@router.delete("/config", dependencies=[Admin])
async def reset_config(instance: Instance) -> ConfigView:
    """Empty the stored configuration: every instance falls back to its environment."""
    await instance.reset()
    return instance.view()


@router.get("/whoami")
async def whoami(instance: Instance) -> JSONResponse:
    """This instance's id."""
    return JSONResponse({"instance": instance.settings.redirector_instance_id})
