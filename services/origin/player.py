"""The player page: catalog, playback through hls.js (vendored), a quality selector."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(tags=["player"])


@router.get("/player", include_in_schema=False)
async def player_page() -> FileResponse:
    """The player; ``?video=<id>`` starts that video."""
    # Revalidated each time so a new release reaches viewers; assets are checked by ETag.
    return FileResponse(
        STATIC_DIR / "player.html",
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def assets() -> StaticFiles:
    """The page's scripts and styles, served at ``/player/assets``."""
    return StaticFiles(directory=STATIC_DIR)
