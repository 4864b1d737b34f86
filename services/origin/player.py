"""The pages: the player (catalog, playback through hls.js (vendored), a quality selector)
and "my videos" (the signed-in account's videos, their privacy, delete). Both sign in with
``shared.http.signin`` and link to the upload page (``ORIGIN_UPLOAD_PAGE_URL``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from starlette.staticfiles import StaticFiles

from services.origin.settings import Settings
from shared.core import ports
from shared.http.delivery import plan_body
from shared.http.pages import fill, page_url

STATIC_DIR = Path(__file__).parent / "static"
# Where the page reads the origins it may load from besides its own (see player.js).
ENDPOINTS_META = '<meta name="vsp-endpoints" content="[]">'
DEFAULT_PORTS = {"http": 80, "https": 443}


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL, as a browser's ``URL.origin`` spells it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = "" if parts.port in (None, DEFAULT_PORTS.get(parts.scheme)) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def allowed_origins(settings: Settings) -> list[str]:
    """The origins the page may send API calls to and load media from, besides its own: those
    the platform points viewers at, and ``ORIGIN_PLAYER_ENDPOINTS``."""
    bases = [settings.origin_cdn_base_url, settings.public_origin_url]
    bases += settings.origin_player_endpoints
    return sorted({url_origin(base) for base in bases if base})


def render_page(settings: Settings) -> bytes:
    """The page with the allowed origins in its ``vsp-endpoints`` meta tag."""
    page = (STATIC_DIR / "player.html").read_text()
    if page.count(ENDPOINTS_META) != 1:
        raise RuntimeError("player.html lost its vsp-endpoints meta tag")
    listed = html.escape(json.dumps(allowed_origins(settings)), quote=True)
    return page.replace(ENDPOINTS_META, f'<meta name="vsp-endpoints" content="{listed}">').encode()


def router(settings: Settings) -> APIRouter:
    """``/player`` and ``/my``, rendered once for the process's settings (the upload page's
    address, unless configured, for each request's host)."""
    player = render_page(settings).decode()
    mine = (STATIC_DIR / "my.html").read_text()
    routes = APIRouter(tags=["player"])

    def serve(template: str, request: Request) -> Response:
        upload = page_url(
            request,
            settings.origin_upload_page_url,
            ports.CHUNKED_UPLOAD,
            "/upload",
            settings.trusted_proxies,
        )
        page = fill(template, {"upload_url": upload}).encode()
        # Revalidated each time so a new release reaches viewers; assets are checked by ETag.
        plan = plan_body(
            page,
            request.headers,
            content_type="text/html; charset=utf-8",
            cache_control="no-cache",
        )
        return Response(plan.body or b"", status_code=plan.status, headers=plan.headers)

    @routes.get("/player", include_in_schema=False)
    async def player_page(request: Request) -> Response:
        """The player; ``?video=<id>`` starts that video."""
        return serve(player, request)

    @routes.get("/my", include_in_schema=False)
    async def my_videos(request: Request) -> Response:
        """The signed-in account's videos."""
        return serve(mine, request)

    return routes


def assets() -> StaticFiles:
    """The page's scripts and styles, served at ``/player/assets``."""
    return StaticFiles(directory=STATIC_DIR)
