"""multipart/form-data parsed as it streams: the file part flows on, text fields are checked.

Browsers put the file in a form; buffering it (as ``request.form()`` does, to a temporary file)
would write every byte twice. Here the parser is fed each received chunk and the file part's
bytes are handed straight to storage.

Everything but the file's content (the fields, every part's headers) counts against
``FormLimits``, and only the fields a video uses are kept. ``open`` reads up to the file's first
bytes, so the fields sent before the file are checked before anything is stored; a field after
the file fails the stream the store is consuming, which then keeps nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, replace

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from shared.core.errors import BadRequest, PayloadTooLarge
from shared.videos.ingest import SourceMetadata
from shared.videos.metadata import InvalidMetadata, MetadataInput

# RFC 2046: a boundary is 1 to 70 characters.
_MAX_BOUNDARY_BYTES = 70
_KNOWN_FIELDS = ("title", "description", "tags", "privacy")


@dataclass(frozen=True)
class FormLimits:
    max_fields: int = 16
    # Field values and every part's headers together: all of the form but the file's content.
    max_text_bytes: int = 64 * 1024


class StreamingForm:
    """Parse ``source`` as multipart/form-data with ``boundary``; iterate the file's bytes.

    ``base`` is the metadata sent beside the form (query parameters); the form's fields and the
    file's name take precedence over it in ``meta``.
    """

    def __init__(
        self,
        source: AsyncIterable[bytes],
        boundary: bytes,
        base: MetadataInput | None = None,
        limits: FormLimits | None = None,
    ) -> None:
        self.source = source
        self.boundary = boundary
        self.limits = limits or FormLimits()
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._input = base or MetadataInput()
        self.meta: SourceMetadata = self._input.checked()
        self._chunks: AsyncIterator[bytes] | None = None
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )
        self._pending: list[bytes] = []
        self._header_name = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._files = 0
        self._field_count = 0
        self._text_bytes = 0

    def _count(self, size: int) -> None:
        self._text_bytes += size
        if self._text_bytes > self.limits.max_text_bytes:
            raise PayloadTooLarge(
                f"the form's fields and part headers exceed {self.limits.max_text_bytes} bytes",
                max_bytes=self.limits.max_text_bytes,
            )

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False
        self._field_name = None
        self._field_value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        name = self._header_name.lower()
        self._headers[name] = self._headers.get(name, b"") + data[start:end]

    def _on_header_end(self) -> None:
        self._header_name = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"filename" in options:
            self._files += 1
            if self._files > 1:
                raise BadRequest("send one file per upload")
            self._in_file = True
            self.filename = _text("the filename", options[b"filename"]) or None
            if self.filename is not None:
                self._update(filename=self.filename)
            return
        self._field_count += 1
        if self._field_count > self.limits.max_fields:
            raise PayloadTooLarge(
                f"the form has more than {self.limits.max_fields} fields",
                max_fields=self.limits.max_fields,
            )
        name = options.get(b"name", b"").decode("latin-1")
        if name in _KNOWN_FIELDS:
            if name in self.fields:
                raise BadRequest(f"the form field {name} is sent twice")
            self._field_name = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._count(end - start)
        if self._field_name is not None:
            self._field_value += data[start:end]

    def _on_part_end(self) -> None:
        if self._field_name is not None:
            value = _text(f"the form field {self._field_name}", bytes(self._field_value))
            self.fields[self._field_name] = value
            self._update(**{self._field_name: value})
            self._field_name = None

    def _update(self, **values: str) -> None:
        self._input = replace(self._input, **values)
        self.meta = self._input.checked()

    async def open(self) -> None:
        """Read the form up to the file's first bytes, checking every field before it."""
        if self._chunks is not None:
            return
        self._chunks = aiter(self.source)
        async for chunk in self._chunks:
            self._write(chunk)
            if self._in_file:
                return
        self._end()

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes, as they arrive."""
        await self.open()
        assert self._chunks is not None
        for piece in self._pending:
            yield piece
        self._pending.clear()
        async for chunk in self._chunks:
            self._write(chunk)
            for piece in self._pending:
                yield piece
            self._pending.clear()
        self._end()

    def _write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise BadRequest("malformed multipart/form-data body") from None

    def _end(self) -> None:
        try:
            self._parser.finalize()
        except MultipartParseError:
            raise BadRequest("malformed multipart/form-data body") from None
        if self._files == 0:
            raise BadRequest("the form has no file part")


def _text(name: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidMetadata(f"{name} is not UTF-8") from None


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart/form-data Content-Type."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    if len(boundary) > _MAX_BOUNDARY_BYTES:
        raise BadRequest(f"the multipart boundary is over {_MAX_BOUNDARY_BYTES} bytes")
    return boundary
