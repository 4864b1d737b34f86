"""What one HTTP/1.1 request may be, and how long its client may take (``shared.http.h1``).

Kept apart from the connection kit so that settings modules can take their defaults from here
without importing the web stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.runtime.servers import KEEP_ALIVE_SECONDS


@dataclass(frozen=True)
class Limits:
    """Limits of one listener; each service exposes them as settings."""

    # Longest request target (path and query); a longer one is answered 414.
    request_line_bytes: int = 8 * 1024
    # Most header fields in one request, and their names and values together (431).
    header_count: int = 100
    header_bytes: int = 16 * 1024
    # Largest request body (413).
    body_bytes: int = 1024 * 1024
    # Time to send a request's head, and then each part of its body (408).
    header_timeout_seconds: float = 10.0
    # Time an idle keep-alive connection stays open between requests.
    keep_alive_seconds: float = float(KEEP_ALIVE_SECONDS)
    # Requests parsed ahead of the one being answered before reading pauses.
    pipeline_depth: int = 16
    # Time a client may leave what is written untaken (its buffers full) before it is cut off,
    # freeing what its answer holds (a balancer's backend connection).
    send_timeout_seconds: float = 60.0
