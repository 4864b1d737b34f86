"""Object keys: the one check every path taken from a request passes before it names an object.

A key is canonical or refused: plain relative folders and a name, no empty, ``.`` or ``..``
component, no control character, and bounded in length, name length and depth, so that one
object has one key (an edge caches it once), every key can be stored, and a hostile path costs a
single regular-expression match.
"""

from __future__ import annotations

import re

from shared.core.errors import BadRequest

# S3's own limit on a key's length; deeper than the platform ever nests is refused too.
MAX_KEY_BYTES = 1024
MAX_KEY_DEPTH = 16
# A file name's limit on every common file system: a longer component could never be stored.
MAX_COMPONENT_BYTES = 255
_CHAR = r"[A-Za-z0-9._\-]"
_FIRST = rf"[A-Za-z0-9]{_CHAR}{{0,{MAX_COMPONENT_BYTES - 1}}}"
_KEY_RE = re.compile(rf"{_FIRST}(?:/{_CHAR}{{1,{MAX_COMPONENT_BYTES}}})*")


def check_key(key: str) -> str:
    """Reject keys that could escape the store or are not canonical relative paths."""
    if (
        len(key) > MAX_KEY_BYTES
        or _KEY_RE.fullmatch(key) is None
        or key.count("/") >= MAX_KEY_DEPTH
        or "/./" in f"/{key}/"
        or "/../" in f"/{key}/"
    ):
        shown = key if len(key) <= 80 else key[:80] + "..."
        raise BadRequest(f"invalid object key: {shown!r}")
    return key
