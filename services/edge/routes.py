"""Edge admin routes: purge by path or prefix, warm a video, cache statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from services.edge import metrics
from services.edge.schemas import CacheStats, PurgeRequest, PurgeResponse, WarmRequest, WarmResponse
from services.edge.service import Edge
from shared.core.errors import BadRequest, NotFound
from shared.core.keys import check_key
from shared.http.auth import bearer_token, check_admin_token

router = APIRouter(prefix="/admin", tags=["admin"])


def edge_of(request: Request) -> Edge:
    edge: Edge = request.app.state.edge
    return edge


def admin(
    edge: Annotated[Edge, Depends(edge_of)],
    authorization: Annotated[str | None, Header()] = None,
) -> Edge:
    """The edge, once the caller showed the admin bearer token."""
    expected = edge.settings.edge_admin_token
    if not expected:
        raise NotFound("the admin API is disabled: EDGE_ADMIN_TOKEN is not set")
    check_admin_token(bearer_token(authorization), expected, "the edge's admin API")
    return edge


@router.post("/purge", response_model=PurgeResponse)
async def purge(body: PurgeRequest, edge: Annotated[Edge, Depends(admin)]) -> object:
    """Drop cached objects by exact object path and by path prefix."""
    if not body.paths and not body.prefixes:
        raise BadRequest("name at least one path or prefix to purge")
    for path in body.paths:
        check_key(path)
    if any(not prefix for prefix in body.prefixes):
        raise BadRequest("an empty prefix would purge everything; name the prefix")
    return {"purged": await edge.purge(body.paths, body.prefixes)}


@router.post("/warm", response_model=WarmResponse)
async def warm(body: WarmRequest, edge: Annotated[Edge, Depends(admin)]) -> object:
    """Fetch a video's playlists, init segments and first segments into the cache."""
    check_key(body.master_path)
    if not body.master_path.endswith(".m3u8"):
        raise BadRequest("master_path must name a playlist (.m3u8)")
    return {"stored": await edge.warm(body.master_path)}


@router.get("/cache", response_model=CacheStats)
async def stats(edge: Annotated[Edge, Depends(admin)]) -> object:
    """What the cache holds now."""
    return {
        "edge_id": edge.edge_id,
        "disk_bytes": edge.disk.used,
        "disk_capacity_bytes": edge.disk.max_bytes,
        "disk_objects": len(edge.disk.keys()),
        "memory_bytes": edge.memory.used,
        "memory_capacity_bytes": edge.memory.max_bytes,
        "hit_ratio": metrics.hit_ratio(),
    }
