"""Playlist rewriting and signed stream URLs for the origin."""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.core.signing import Signer
from shared.media import hls, thumbnails


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
    return hls.rewrite_uris(text, _signing(playlist_path, signer, ttl_seconds, now))


def _signing(
    parent_path: str, signer: Signer, ttl_seconds: int, now: float | None
) -> Callable[[str], str]:
    """A rewrite that signs a URI relative to ``parent_path`` and leaves absolute ones be."""
    at = time.time() if now is None else now

    def rewrite(uri: str) -> str:
        if hls.is_absolute(uri):
            return uri
        path = hls.resolve(parent_path, uri)
        return hls.append_query(uri, signer.sign(path, ttl_seconds, now=at).query())

    return rewrite


def sign_thumbnails(
    text: str, track_path: str, signer: Signer, ttl_seconds: int, *, now: float | None = None
) -> str:
    """The thumbnails track with every relative image URI signed, its ``#xywh`` kept."""
    return thumbnails.rewrite_thumbnails(text, _signing(track_path, signer, ttl_seconds, now))
