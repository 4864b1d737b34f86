"""The browser upload page: tus-js-client (vendored) with a progress bar and live state.

The page sends files to this service's ``/files/``, or to the endpoint its address names
(``?endpoint=``) when that is a path on the same origin or one of the endpoints the server
allows; the allowed list is written into the page, so the page never trusts its address alone.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from shared.core.errors import NotFound

STATIC = Path(__file__).parent / "static"
_ASSETS = {
    "tus.min.js": "text/javascript",
    "endpoint.js": "text/javascript",
    "upload.js": "text/javascript",
    "upload.css": "text/css",
}
_ENDPOINTS_MARK = "{{endpoints}}"


def page_router(allowed_endpoints: list[str]) -> APIRouter:
    """The page and its assets; ``allowed_endpoints`` are the other servers it may send to."""
    router = APIRouter(tags=["page"])
    page = (STATIC / "upload.html").read_text()
    page = page.replace(_ENDPOINTS_MARK, html.escape(json.dumps(allowed_endpoints), quote=True))

    @router.get("/upload", include_in_schema=False)
    async def upload_page() -> HTMLResponse:
        """The upload page."""
        return HTMLResponse(page)

    @router.get("/static/upload/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        """The page's scripts and styles (a fixed list: no path from the URL reaches the disk)."""
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise NotFound("no such asset")
        return FileResponse(
            STATIC / name, media_type=media_type, headers={"Cache-Control": "public, max-age=300"}
        )

    return router
