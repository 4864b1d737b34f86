"""HTTP Range (RFC 9110) for single byte ranges, conditional requests and content coding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Protocol

from shared.core.errors import RangeNotSatisfiable

# Longer than any single range a player sends; longer headers are ignored unread.
MAX_RANGE_HEADER_CHARS = 200
# One range of bytes (RFC 9110 14.1.2): ASCII digits only, optional whitespace around the whole.
_RANGE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)-([0-9]*)[ \t]*", re.IGNORECASE)


class RequestHeaders(Protocol):
    """A request's headers by lower-case name: a dict, Starlette's ``Headers`` or Granian's."""

    def get(self, key: str, /) -> str | None: ...


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

    Multiple ranges, unknown units, anything but ASCII digits and headers over
    ``MAX_RANGE_HEADER_CHARS`` are answered with the whole object, as RFC 9110 allows. An
    unsatisfiable range raises RangeNotSatisfiable carrying ``Content-Range: bytes */size``;
    nothing else is raised, and a range returned lies within the object.
    """
    if not header or len(header) > MAX_RANGE_HEADER_CHARS:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size <= 0:
            raise _unsatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignore the header (RFC 9110 14.2)
    if start >= size:
        raise _unsatisfiable(size)
    return ByteRange(start, min(end, size - 1))


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the range lies outside the object's {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


def http_date(moment: datetime) -> str:
    """An IMF-fixdate for Last-Modified."""
    return format_datetime(moment, usegmt=True)


Validator = datetime | str | None


def _seconds(value: Validator) -> int | None:
    """Whole seconds of a Last-Modified given as a datetime or an HTTP date, None if unknown."""
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(value) if isinstance(value, str) else value
        return int(moment.timestamp())
    except (TypeError, ValueError, OverflowError):
        return None


def not_modified(headers: RequestHeaders, etag: str | None, last_modified: Validator) -> bool:
    """True when If-None-Match or If-Modified-Since says the client's copy is current.

    ``etag`` is the ETag header value as sent (quoted, maybe ``W/``); If-None-Match compares
    weakly (RFC 9110 13.1.2), and If-Modified-Since counts only without If-None-Match.
    """
    inm = headers.get("if-none-match")
    if inm is not None:
        if etag is None:
            return False
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag.removeprefix("W/") in tags
    ims = headers.get("if-modified-since")
    if not ims:
        return False
    modified, since = _seconds(last_modified), _seconds(ims)
    return modified is not None and since is not None and modified <= since


def range_applies(headers: RequestHeaders, etag: str | None, last_modified: Validator) -> bool:
    """Whether ``If-Range`` (if any) still matches, so a Range request may get a 206."""
    condition = headers.get("if-range")
    if not condition:
        return True
    condition = condition.strip()
    if condition.startswith(("W/", '"')):
        # Strong comparison: weak validators never match (RFC 9110 13.1.5).
        return etag is not None and not etag.startswith("W/") and condition == etag
    modified, since = _seconds(last_modified), _seconds(condition)
    return modified is not None and modified == since


def evaluate(
    headers: RequestHeaders, size: int, etag: str | None, last_modified: Validator
) -> tuple[int, ByteRange | None]:
    """What a GET or HEAD of a ``size``-byte representation gets under RFC 9110's conditions.

    304 (no range), 206 with the range, or 200 (no range); raises RangeNotSatisfiable (416).
    """
    # Every cache hit of an edge passes here: a request without conditions or a range costs
    # three header lookups and no further call.
    conditional = headers.get("if-none-match") is not None or headers.get("if-modified-since")
    if conditional and not_modified(headers, etag, last_modified):
        return 304, None
    range_header = headers.get("range")
    if not range_header or not range_applies(headers, etag, last_modified):
        return 200, None
    byte_range = parse_range(range_header, size)
    if byte_range is None:
        return 200, None
    return 206, byte_range


def accepts_gzip(headers: RequestHeaders) -> bool:
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
