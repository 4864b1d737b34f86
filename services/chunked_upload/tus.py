"""tus 1.0.0 header parsing and formatting (https://tus.io/protocols/resumable-upload)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Literal
from urllib.parse import urlsplit

from shared.core.errors import BadRequest, HeadersTooLarge, PreconditionFailed

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
)
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Up to a signed 64-bit integer's width (the columns are BIGINT), which also keeps int() cheap.
_INTEGER = re.compile(r"[0-9]{1,19}")
# The spec forbids spaces and commas in a key and wants ASCII; an RFC 9110 token is that.
_METADATA_KEY = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
MAX_PARTIALS = 100
METADATA_MAX_BYTES = 8 * 1024
METADATA_MAX_PAIRS = 16


def check_version(header: str | None) -> None:
    """Every request but OPTIONS must speak our protocol version (412 otherwise)."""
    if header != TUS_VERSION:
        raise PreconditionFailed(
            f"Tus-Resumable must be {TUS_VERSION}, got {header!r}",
            headers={"Tus-Version": TUS_VERSION},
        )


def parse_non_negative(name: str, header: str | None) -> int | None:
    """An integer header such as Upload-Offset or Upload-Length, if present."""
    if header is None:
        return None
    value = header.strip()
    if _INTEGER.fullmatch(value) is None:
        raise BadRequest(f"{name} must be a non-negative integer of at most 19 digits")
    return int(value)


def parse_metadata(
    header: str | None,
    *,
    max_bytes: int = METADATA_MAX_BYTES,
    max_pairs: int = METADATA_MAX_PAIRS,
) -> dict[str, str]:
    """Upload-Metadata: comma-separated ``key base64value`` pairs (the value may be absent)."""
    result: dict[str, str] = {}
    if not header or not header.strip():
        return result
    if len(header) > max_bytes:  # decoded as latin-1: one character per byte
        raise HeadersTooLarge(f"Upload-Metadata is limited to {max_bytes} bytes")
    items = header.split(",")
    if len(items) > max_pairs:
        raise BadRequest(f"Upload-Metadata is limited to {max_pairs} pairs")
    for item in items:
        pieces = item.strip().split(" ")
        key = pieces[0]
        if len(pieces) > 2 or _METADATA_KEY.fullmatch(key) is None:
            raise BadRequest(
                "malformed Upload-Metadata: each pair is a key (a token of at most 64 "
                "characters) and an optional base64 value, separated by one space"
            )
        if key in result:
            raise BadRequest(f"Upload-Metadata key {key} is sent twice")
        try:
            raw = base64.b64decode(pieces[1], validate=True) if len(pieces) == 2 else b""
            result[key] = raw.decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata value of {key} is not base64 UTF-8") from None
    return result


def format_metadata(metadata: dict[str, str]) -> str:
    """The Upload-Metadata header for stored metadata."""
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> hashlib._Hash:
        return CHECKSUM_ALGORITHMS[self.algorithm]()


def parse_checksum(header: str | None) -> Checksum | None:
    """Upload-Checksum: ``<algorithm> <base64 digest>``."""
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"unsupported Upload-Checksum algorithm; use one of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise BadRequest("Upload-Checksum digest is not base64") from None
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise BadRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    kind: Literal["partial", "final"]
    partials: list[uuid.UUID] = field(default_factory=list)


def upload_id_from_url(url: str, base_path: str) -> uuid.UUID:
    """The upload id at the end of an upload URL, absolute or relative."""
    prefix = base_path.rstrip("/") + "/"
    try:
        path = urlsplit(url).path
        if path.startswith(prefix):
            return uuid.UUID(path[len(prefix) :].strip("/"))
    except ValueError:  # not a URL, or no upload id at its end
        pass
    raise BadRequest("an upload URL that is not of this server")


def parse_concat(header: str | None, base_path: str) -> Concat | None:
    """Upload-Concat: ``partial`` or ``final;<url> <url> ...``."""
    if header is None:
        return None
    value = header.strip()
    if value == "partial":
        return Concat("partial")
    kind, sep, joined = value.partition(";")
    urls = joined.split()
    if kind != "final" or not sep or not urls:
        raise BadRequest("Upload-Concat must be 'partial' or 'final;<url> <url> ...'")
    if len(urls) > MAX_PARTIALS:
        raise BadRequest(f"Upload-Concat joins at most {MAX_PARTIALS} partial uploads")
    ids = [upload_id_from_url(url, base_path) for url in urls]
    if len(set(ids)) != len(ids):
        raise BadRequest("Upload-Concat lists the same partial upload twice")
    return Concat("final", ids)


def format_concat(partials: list[str] | None, is_partial: bool, base_path: str) -> str | None:
    """The Upload-Concat header a HEAD reports, if the upload takes part in a concatenation."""
    if is_partial:
        return "partial"
    if partials:
        return "final;" + " ".join(f"{base_path.rstrip('/')}/{p}" for p in partials)
    return None


def http_date(moment: datetime) -> str:
    """RFC 7231 date, as Upload-Expires wants it."""
    return format_datetime(moment, usegmt=True)
