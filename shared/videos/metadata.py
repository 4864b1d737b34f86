"""A video's title, description, tags, filename and privacy, checked before any byte is stored.

Both upload services take them from the client (query parameters, form fields, tus
Upload-Metadata) and check them here, once, before the body: whatever the videos table would
refuse at the final INSERT (a value longer than its column, a NUL) is a 400 now instead of a
discarded upload later. Control characters are refused too (tab, CR and LF are allowed in the
description only), as are the bidirectional overrides that make a filename read backwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import String

from shared.core.errors import BadRequest
from shared.db.models import Privacy, Video
from shared.videos.ingest import SourceMetadata


def _column_chars(column: str) -> int:
    sql_type = Video.__table__.c[column].type
    item = getattr(sql_type, "item_type", sql_type)  # ARRAY(String(n)): the length of one item
    assert isinstance(item, String) and item.length is not None, column
    return item.length


TITLE_MAX_CHARS = _column_chars("title")
FILENAME_MAX_CHARS = _column_chars("filename")
TAG_MAX_CHARS = _column_chars("tags")
TAGS_MAX = 32
# The column is unbounded; this is what a video page shows.
DESCRIPTION_MAX_CHARS = 5000
# Any other value a client may attach (tus Upload-Metadata keys besides the ones above).
OTHER_VALUE_MAX_CHARS = 1024

# C0 and C1 controls, DEL, line and paragraph separators, bidirectional embeddings, overrides
# and isolates, and lone surrogates (which no UTF-8 encoder, PostgreSQL's included, accepts).
_ALWAYS = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_ONE_LINE = re.compile(rf"[\x00-\x1f{_ALWAYS}]")
_MULTILINE = re.compile(rf"[\x00-\x08\x0b\x0c\x0e-\x1f{_ALWAYS}]")  # tab, LF and CR allowed


class InvalidMetadata(BadRequest):
    code = "invalid_metadata"


def check_text(name: str, value: str, max_chars: int, *, multiline: bool = False) -> str:
    """``value`` if it is at most ``max_chars`` long and holds no control character."""
    if len(value) > max_chars:
        raise InvalidMetadata(f"{name} is limited to {max_chars} characters")
    if (_MULTILINE if multiline else _ONE_LINE).search(value) is not None:
        raise InvalidMetadata(f"{name} contains a control character")
    return value


def parse_tags(raw: str) -> list[str]:
    """Comma-separated tags, trimmed, empty ones dropped."""
    tags = [t.strip() for t in raw.split(",") if t.strip()]
    if len(tags) > TAGS_MAX:
        raise InvalidMetadata(f"at most {TAGS_MAX} tags")
    return [check_text("a tag", tag, TAG_MAX_CHARS) for tag in tags]


def check_privacy(value: str) -> Privacy:
    """``public``, ``unlisted`` or ``private`` (empty means public), or InvalidMetadata."""
    try:
        return Privacy(value or Privacy.public.value)
    except ValueError:
        choices = ", ".join(p.value for p in Privacy)
        raise InvalidMetadata(f"privacy must be one of {choices}") from None


@dataclass(frozen=True)
class MetadataInput:
    """Video metadata as the client sent it: every value a string, not yet checked."""

    title: str = ""
    description: str = ""
    tags: str = ""
    filename: str = ""
    privacy: str = ""

    def checked(self) -> SourceMetadata:
        """The metadata a video row can hold, or InvalidMetadata (400)."""
        filename = check_text("filename", self.filename, FILENAME_MAX_CHARS) or None
        title = check_text("title", self.title, TITLE_MAX_CHARS)
        return SourceMetadata(
            # A long filename is a valid filename: the title made from it is cut, not refused.
            title=title or (filename or "")[:TITLE_MAX_CHARS],
            description=check_text(
                "description", self.description, DESCRIPTION_MAX_CHARS, multiline=True
            ),
            tags=parse_tags(self.tags),
            filename=filename,
            privacy=check_privacy(self.privacy),
        )
