"""HLS playlist helpers: find every URI a playlist references and rewrite it."""

from __future__ import annotations

import re
from collections.abc import Callable
from posixpath import dirname, normpath
from urllib.parse import urlsplit

# Tags whose URI="..." attribute names a resource the player fetches.
URI_TAGS = (
    "#EXT-X-MAP",
    "#EXT-X-MEDIA",
    "#EXT-X-I-FRAME-STREAM-INF",
    "#EXT-X-KEY",
    "#EXT-X-SESSION-KEY",
    "#EXT-X-PRELOAD-HINT",
    "#EXT-X-PART",
    "#EXT-X-RENDITION-REPORT",
)
_URI_ATTR = re.compile(r'URI="([^"]*)"')


def is_absolute(uri: str) -> bool:
    """True for URIs with a scheme or an absolute path."""
    return bool(urlsplit(uri).scheme) or uri.startswith("/")


def resolve(playlist_path: str, uri: str) -> str:
    """The object path a relative ``uri`` in the playlist at ``playlist_path`` refers to."""
    base = dirname(playlist_path)
    bare = uri.split("?", 1)[0].split("#", 1)[0]
    return normpath(f"{base}/{bare}" if base else bare)


def append_query(uri: str, query: str) -> str:
    """Add ``query`` to ``uri``, merging with a query it already has."""
    if not query:
        return uri
    fragment = ""
    if "#" in uri:
        uri, fragment = uri.split("#", 1)
        fragment = "#" + fragment
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{query}{fragment}"


def rewrite_uris(text: str, rewrite: Callable[[str], str]) -> str:
    """Apply ``rewrite`` to every URI line and every URI attribute of URI-bearing tags."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            out.append(line)
        elif stripped.startswith("#"):
            if stripped.startswith(URI_TAGS) and 'URI="' in stripped:
                line = _URI_ATTR.sub(lambda m: f'URI="{rewrite(m.group(1))}"', line)
            out.append(line)
        else:
            out.append(rewrite(stripped))
    return "\n".join(out) + "\n"


def referenced_uris(text: str) -> list[str]:
    """Every URI the playlist references, in order."""
    found: list[str] = []

    def collect(uri: str) -> str:
        found.append(uri)
        return uri

    rewrite_uris(text, collect)
    return found


def media_durations(text: str) -> list[float]:
    """The EXTINF durations of a media playlist."""
    return [
        float(line.split(":", 1)[1].split(",", 1)[0])
        for line in text.splitlines()
        if line.startswith("#EXTINF:")
    ]


def is_master(text: str) -> bool:
    """Whether the playlist is a master (multivariant) playlist."""
    return "#EXT-X-STREAM-INF" in text
