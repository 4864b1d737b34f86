"""The browser upload page: tus-js-client (vendored) with a progress bar and live state.

The page signs in on this service (``shared.http.signin``) and sends files to its ``/files/``,
or to the endpoint its address names (``?endpoint=``) when that is a path on the same origin or
one of the endpoints the server allows; the allowed list is written into the page, so the page
never trusts its address alone. It links to the origin's player and "my videos" pages
(``PUBLIC_ORIGIN_URL``, or the origin's default port on the page's host).
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from shared.core import ports
from shared.core.errors import NotFound
from shared.http.pages import fill, page_url

STATIC = Path(__file__).parent / "static"
_ASSETS = {
    "tus.min.js": "text/javascript",
    "endpoint.js": "text/javascript",
    "upload.js": "text/javascript",
    "upload.css": "text/css",
}


def page_router(
    allowed_endpoints: list[str], origin_url: str | None, trusted: frozenset[str]
) -> APIRouter:
    """The page and its assets; ``allowed_endpoints`` are the other servers it may send to,
    ``origin_url`` the origin whose pages it links to, ``trusted`` the proxies in front."""
    router = APIRouter(tags=["page"])
    page = fill((STATIC / "upload.html").read_text(), {"endpoints": json.dumps(allowed_endpoints)})

    @router.get("/upload", include_in_schema=False)
    async def upload_page(request: Request) -> HTMLResponse:
        """The upload page."""
        origin = page_url(request, origin_url and origin_url.rstrip("/"), ports.ORIGIN, "", trusted)
        links = {"player_url": f"{origin}/player", "my_url": f"{origin}/my"}
        return HTMLResponse(fill(page, links), headers={"Cache-Control": "no-cache"})

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
