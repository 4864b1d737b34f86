"""Object keys: the one check every path taken from a request passes before it names an object."""

from __future__ import annotations

import re

from shared.core.errors import BadRequest

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")


def check_key(key: str) -> str:
    """Reject keys that could escape the store or are not plain relative paths."""
    if not _KEY_RE.match(key) or ".." in key.split("/") or "//" in key or key.endswith("/"):
        raise BadRequest(f"invalid object key: {key!r}")
    return key
