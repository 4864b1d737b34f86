"""The browser upload page: tus-js-client (vendored) with a progress bar and live state."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from shared.core.errors import NotFound

STATIC = Path(__file__).parent / "static"
_ASSETS = {
    "tus.min.js": "text/javascript",
    "upload.js": "text/javascript",
    "upload.css": "text/css",
}

router = APIRouter(tags=["page"])


@router.get("/upload", include_in_schema=False)
async def upload_page() -> FileResponse:
    """The upload page."""
    return FileResponse(STATIC / "upload.html", media_type="text/html")


@router.get("/static/upload/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """The page's scripts and styles (a fixed list: no path from the URL reaches the disk)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no asset {name}")
    return FileResponse(
        STATIC / name, media_type=media_type, headers={"Cache-Control": "public, max-age=300"}
    )
