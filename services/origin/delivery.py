"""``/origin/...``: signed object delivery as plain ASGI.

This is the hot path every segment takes, so it skips FastAPI's routing, dependency injection
and validation (measured in docs/BENCHMARKS.md); errors still go through the app's handlers.

Two URL styles reach it:

- ``/origin/<path>?exp=&sig=v2.<hex>[&kid=]``: a query signature on one object. Playlists
  come back with every child URI freshly signed, private and short-lived.
- ``/origin/t/<token>/<path>``: a path token covering the master playlist's folder. Relative
  child URIs inherit the token, so playlists are served as stored and every response is public,
  which lets edges cache one copy per object for all viewers.

Both are checked by ``shared.core.signing`` (formats, legacy rules and bounds described there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from services.origin import service
from services.origin.captions import served_master
from services.origin.settings import Settings
from shared.core.signing import DELIVERY_PREFIX, TOKEN_SEGMENT, Credentials, Signer
from shared.http.delivery import plan_body, send_object, send_plan
from shared.media.captions import stored_key
from shared.media.thumbnails import THUMBNAILS
from shared.runtime.resources import Resources

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
VTT_TYPE = "text/vtt"
PREFIX = DELIVERY_PREFIX
TOKEN_PREFIX = f"{PREFIX}{TOKEN_SEGMENT}/"


@dataclass(frozen=True)
class RouteLabel:
    """Stands in for a matched route so metrics label requests by template."""

    path: str


QUERY_ROUTE = RouteLabel("/origin/{path}")
TOKEN_ROUTE = RouteLabel("/origin/t/{token}/{path}")


class OriginDelivery:
    """The plain-ASGI app mounted at ``/origin``."""

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.settings = settings
        self.signer = signer
        self.credentials = Credentials(signer)
        self.segment_cache = f"public, max-age={settings.origin_segment_max_age_seconds}, immutable"
        self.signed_playlist_cache = (
            f"private, max-age={settings.origin_signed_playlist_max_age_seconds}"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise HTTPException(404)
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            raise HTTPException(405, headers={"Allow": "GET, HEAD, OPTIONS"})
        res: Resources = scope["app"].state.resources
        path = scope["path"]
        if not path.startswith(PREFIX):
            raise HTTPException(404)
        # Labelled before the check, so refused requests are counted under their route too.
        scope["route"] = TOKEN_ROUTE if path.startswith(TOKEN_PREFIX) else QUERY_ROUTE
        key, _, by_token = self.credentials.check(
            path, scope["query_string"].decode("latin-1"), time.time()
        )
        store = res.need_store()
        if key.endswith("/" + THUMBNAILS) and not by_token:
            # Its sprite URIs are signed like a playlist's children; a token already covers them.
            body = await service.signed_thumbnails(res, self.settings, self.signer, key)
            plan = plan_body(
                body,
                Headers(scope=scope),
                content_type=VTT_TYPE,
                cache_control=self.signed_playlist_cache,
            )
            await send_plan(plan, send, method=method)
            return
        # Captions live beside the ladder's runs; the paths under the master's folder that
        # its subtitle renditions name (so a path token covers them) are theirs.
        stored = stored_key(key)
        if not key.endswith(".m3u8"):
            await send_object(store, stored, scope, send, cache_control=self.segment_cache)
            return
        headers = Headers(scope=scope)
        stored_text = (await store.get_bytes(stored)).decode()
        text = await served_master(res, key, stored_text)
        if by_token:
            body = text.encode()
            # A master served with subtitles is validated by its own bytes, not the object's.
            info = await store.stat(stored) if text == stored_text else None
            plan = plan_body(
                body,
                headers,
                content_type=PLAYLIST_TYPE,
                cache_control=self._token_playlist_cache(body),
                etag=info.etag if info else None,
                last_modified=info.last_modified if info else None,
            )
        else:
            body = await service.signed_playlist(res, self.settings, self.signer, key, text=text)
            plan = plan_body(
                body, headers, content_type=PLAYLIST_TYPE, cache_control=self.signed_playlist_cache
            )
        await send_plan(plan, send, method=method)

    def _token_playlist_cache(self, body: bytes) -> str:
        # A playlist still growing (streamed while transcoding) must not be cached for long.
        finished = b"#EXT-X-ENDLIST" in body or b"#EXT-X-STREAM-INF" in body
        seconds = (
            self.settings.origin_token_playlist_max_age_seconds
            if finished
            else self.settings.origin_live_playlist_max_age_seconds
        )
        return f"public, max-age={seconds}"
