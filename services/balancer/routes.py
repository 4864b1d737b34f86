"""Balancer routes: stats, the dashboard and its WebSocket (viewer requests never get here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse

from services.balancer.service import Balancer
from shared.core.errors import NotFound

STATIC = Path(__file__).parent / "static"
DASHBOARD_FILES = {"dashboard.js", "dashboard.css", "chart.umd.min.js"}

ops_router = APIRouter(tags=["balancer"])


def balancer_of(scope_holder: Request | WebSocket) -> Balancer:
    balancer: Balancer = scope_holder.app.state.balancer
    return balancer


@ops_router.get("/api/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Per-backend score, tier, measurements and traffic, as of the last scrape."""
    return balancer_of(request).latest


@ops_router.get("/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-cache"})


@ops_router.get("/dashboard/{name}", include_in_schema=False)
async def dashboard_file(name: str) -> FileResponse:
    if name not in DASHBOARD_FILES:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(STATIC / name, headers={"Cache-Control": "public, max-age=300"})


@ops_router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """The recent history first, then one snapshot a second."""
    balancer = balancer_of(websocket)
    await websocket.accept()
    try:
        await websocket.send_json({"type": "history", "snapshots": list(balancer.history)})
        while True:
            snapshot = await balancer.next_snapshot()
            await websocket.send_json({"type": "snapshot", "snapshot": snapshot})
    except (WebSocketDisconnect, RuntimeError, OSError):
        # The viewer closed the page; the next send on a closed socket lands here too.
        return
