"""HTTP Range (RFC 9110) for single byte ranges, conditional requests and content coding."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from shared.core.errors import RangeNotSatisfiable


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range a ``Range`` header asks for; None means send the whole object.

    Multiple ranges and unknown units are answered with the whole object, as RFC 9110 allows.
    An unsatisfiable range raises RangeNotSatisfiable carrying ``Content-Range: bytes */size``.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    unsatisfiable = RangeNotSatisfiable(
        f"range {spec!r} is outside the object's {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or size == 0:
                raise unsatisfiable
            return ByteRange(max(0, size - suffix), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or (last and end < start):
        return None  # syntactically invalid: ignore the header (RFC 9110 14.2)
    if start >= size:
        raise unsatisfiable
    return ByteRange(start, min(end, size - 1))


def http_date(moment: datetime) -> str:
    """An IMF-fixdate for Last-Modified."""
    return format_datetime(moment, usegmt=True)


def not_modified(headers: Mapping[str, str], etag: str, last_modified: datetime) -> bool:
    """True when If-None-Match or If-Modified-Since says the client's copy is current."""
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or f'"{etag}"' in tags
    ims = headers.get("if-modified-since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        return int(last_modified.timestamp()) <= int(since.timestamp())
    return False


def range_applies(headers: Mapping[str, str], etag: str, last_modified: datetime) -> bool:
    """Whether ``If-Range`` (if any) still matches, so a Range request may get a 206."""
    condition = headers.get("if-range")
    if not condition:
        return True
    condition = condition.strip()
    if condition.startswith(("W/", '"')):
        return condition == f'"{etag}"'  # weak validators never match (RFC 9110 13.1.5)
    try:
        since = parsedate_to_datetime(condition)
    except (TypeError, ValueError):
        return False
    return int(last_modified.timestamp()) == int(since.timestamp())


def accepts_gzip(headers: Mapping[str, str]) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (a ``q=0`` refuses it)."""
    for item in (headers.get("accept-encoding") or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            try:
                return not quality or float(quality) > 0
            except ValueError:
                return False
    return False
