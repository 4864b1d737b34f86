"""Playlist rewriting and signed stream URLs for the origin."""

from __future__ import annotations

import time

from shared.core.signing import Signer
from shared.media import hls


def children_ttl(ttl_seconds: int, media_seconds: float) -> int:
    """A child's signature lasts the whole media plus the TTL, so playback never meets a 403."""
    return int(ttl_seconds + media_seconds + 1)


def sign_playlist(
    text: str, playlist_path: str, signer: Signer, ttl_seconds: int, *, now: float | None = None
) -> str:
    """Rewrite every relative URI in the playlist with a fresh signature for its object path.

    URIs stay relative (so the playlist works from origin, edge or balancer alike) and keep any
    query they already had.
    """
    now = time.time() if now is None else now

    def rewrite(uri: str) -> str:
        if hls.is_absolute(uri):
            return uri
        path = hls.resolve(playlist_path, uri)
        return hls.append_query(uri, signer.sign(path, ttl_seconds, now=now).query())

    return hls.rewrite_uris(text, rewrite)
