"""The redirect decision: which side a request goes to and the URL it is sent to.

Pure and synchronous so the hot path never waits: the configuration it reads is the in-memory
copy the config store keeps fresh.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from services.redirector.schemas import PERMANENT, CdnTarget, RedirectConfig
from shared.core.errors import BadRequest

Side = Literal["origin", "cdn"]

_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
# Viewers ask for the same popular videos over and over: each distinct valid URL is parsed and
# checked once, its two answers made, then answered from this many remembered ones (refused URLs
# are never kept; a new configuration forgets them all).
PARSED_URLS = 1024


class InvalidVideoUrl(BadRequest):
    code = "invalid_video_url"


class HostNotAllowed(BadRequest):
    code = "host_not_allowed"


@dataclass(frozen=True)
class Redirect:
    side: Side
    status: int
    location: str
    cache_control: str

    @functools.cached_property
    def fields(self) -> bytes:
        """Its header lines as sent (``name: value\r\n`` each), rendered once."""
        return b"location: %s\r\ncache-control: %s\r\ncontent-length: 0\r\n" % (
            self.location.encode(),
            self.cache_control.encode(),
        )


class HostPatterns:
    """Origin host patterns: ``name`` matches itself, ``*.name`` matches any subdomain of it."""

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        suffixes: list[str] = []
        for raw in patterns:
            pattern = raw.strip().lower()
            if pattern.startswith("*.") and len(pattern) > 2 and "*" not in pattern[2:]:
                suffixes.append(pattern[1:])
            elif pattern and "*" not in pattern:
                exact.add(pattern)
            else:
                raise ValueError(f"bad origin host pattern {raw!r}: use name or *.name")
        self.exact = frozenset(exact)
        self.suffixes = tuple(suffixes)

    def allows(self, host: str) -> bool:
        return host in self.exact or host.endswith(self.suffixes)


@dataclass(frozen=True)
class VideoUrl:
    """A validated video URL on an origin host."""

    scheme: str
    netloc: str
    subdomain: str
    path: str
    query: str

    @property
    def origin_url(self) -> str:
        tail = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{self.path}{tail}"

    def cdn_url(self, cdn_host: str) -> str:
        """The same object on the CDN, over the scheme the viewer asked for (https stays
        https)."""
        tail = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{cdn_host}/{self.subdomain}{self.path}{tail}"

    @property
    def edge_path(self) -> str:
        """The same object as a path-absolute reference: the viewer stays on the scheme and host
        it asked the redirect of, whose ``/origin/`` routes reach the edges."""
        tail = f"?{self.query}" if self.query else ""
        return f"{self.path}{tail}"


def parse_video_url(
    video: str | None, hosts: HostPatterns, max_bytes: int, *, path_reference: bool = False
) -> VideoUrl:
    """Validate ``video``; BadRequest subclasses say exactly what is wrong.

    ``path_reference``: its path will be sent on its own as a Location (``VideoUrl.edge_path``).
    """
    if not video:
        raise InvalidVideoUrl("the video query parameter is required: /?video=<url>")
    if len(video) > max_bytes:
        raise InvalidVideoUrl(f"the video URL is longer than {max_bytes} characters")
    # Control characters and spaces could split the Location header; a backslash is read as a
    # slash by browsers, which turns origin.host\@evil into a redirect to evil.
    if not video.isascii() or _UNSAFE.search(video):
        raise InvalidVideoUrl("the video URL has spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(video)
        port = parts.port
    except ValueError as exc:
        raise InvalidVideoUrl(f"the video URL cannot be parsed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidVideoUrl("the video URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise InvalidVideoUrl("the video URL must not carry credentials")
    host = parts.hostname
    if not host:
        raise InvalidVideoUrl("the video URL has no host")
    if not hosts.allows(host):
        raise HostNotAllowed(f"{host} is not an origin host")
    # Sent on its own, //evil.example/x is a protocol-relative reference: a redirect to evil.
    if path_reference and parts.path.startswith("//"):
        raise InvalidVideoUrl("the video URL's path must not start with //")
    netloc = host if port is None else f"{host}:{port}"
    return VideoUrl(parts.scheme, netloc, host.split(".", 1)[0], parts.path or "/", parts.query)


def viewer_key(explicit: str | None, forwarded: str | None, client: str | None) -> str | None:
    """Who the viewer is for sticky mode: X-Viewer-Id, else the first X-Forwarded-For hop."""
    if explicit:
        return explicit[:256]
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return client


def viewer_bucket(viewer: str, ratio: int) -> bool:
    """Whether a sticky viewer belongs to the origin side (the same answer on every instance)."""
    digest = hashlib.blake2b(viewer.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % ratio == 0


class RatioSplit:
    """Sends exactly one request in ``ratio`` to the origin, counted per instance."""

    def __init__(
        self,
        config: RedirectConfig,
        hosts: HostPatterns,
        *,
        max_url_bytes: int,
        permanent_max_age_seconds: int,
        cdn_target: CdnTarget = "host",
    ) -> None:
        self.hosts = hosts
        self.max_url_bytes = max_url_bytes
        self.permanent_max_age_seconds = permanent_max_age_seconds
        self.cdn_target = cdn_target
        self._count = 0
        self._answers = functools.lru_cache(maxsize=PARSED_URLS)(self._answers_once)
        self.apply(config)

    def apply(self, config: RedirectConfig) -> None:
        """Answer with ``config`` from the next request on."""
        self.config = config
        # A cached 301 pins a viewer to one side for good; 302 and friends are never cached.
        if config.status_code in PERMANENT:
            self.cache_control = f"max-age={self.permanent_max_age_seconds}"
        else:
            self.cache_control = "no-store"
        self._answers.cache_clear()

    def _answers_once(self, video: str | None) -> tuple[Redirect, Redirect]:
        """The origin side's and the CDN side's answer for ``video`` (BadRequest if invalid)."""
        path_reference = self.cdn_target == "edges"
        url = parse_video_url(video, self.hosts, self.max_url_bytes, path_reference=path_reference)
        status, cache_control = self.config.status_code, self.cache_control
        return (
            Redirect("origin", status, url.origin_url, cache_control),
            Redirect("cdn", status, self.cdn_location(url), cache_control),
        )

    def cdn_location(self, url: VideoUrl) -> str:
        """Where the CDN side sends ``url``: the CDN host, or the edges behind this host."""
        if self.cdn_target == "edges":
            return url.edge_path
        return url.cdn_url(self.config.cdn_host)

    def pick(self, viewer: str | None = None) -> Side:
        """The side of the next request: by the viewer's hash when sticky, else by the counter."""
        ratio = self.config.ratio
        if self.config.sticky and viewer:
            return "origin" if viewer_bucket(viewer, ratio) else "cdn"
        count = self._count
        self._count = count + 1
        return "origin" if count % ratio == 0 else "cdn"

    def redirect(self, video: str | None, viewer: str | None = None) -> Redirect:
        """Validate the video URL, then pick its side; nothing is counted for a bad request."""
        origin, cdn = self._answers(video)
        return origin if self.pick(viewer) == "origin" else cdn
