"""multipart/form-data parsed as it streams: the file part flows on, text fields are kept.

Browsers put the file in a form; buffering it (as ``request.form()`` does, to a temporary file)
would write every byte twice. Here the parser is fed each received chunk and the file part's
bytes are handed straight to storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from shared.core.errors import BadRequest

_MAX_FIELD_BYTES = 64 * 1024


class StreamingForm:
    """Parse ``source`` as multipart/form-data with ``boundary``; iterate the file's bytes."""

    def __init__(self, source: AsyncIterable[bytes], boundary: bytes) -> None:
        self.source = source
        self.boundary = boundary
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._pending: list[bytes] = []
        self._header_name = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self._field_name: str | None = None
        self._field_value = bytearray()
        self._files = 0

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._in_file = False
        self._field_name = None
        self._field_value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        name = self._header_name.lower()
        self._headers[name] = self._headers.get(name, b"") + data[start:end]

    def _on_header_end(self) -> None:
        self._header_name = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            self._files += 1
            if self._files > 1:
                raise BadRequest("send one file per upload")
            self._in_file = True
            self.filename = options[b"filename"].decode("utf-8", "replace") or None
        else:
            self._field_name = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._field_value += data[start:end]
        if len(self._field_value) > _MAX_FIELD_BYTES:
            raise BadRequest(f"form field {self._field_name!r} is over {_MAX_FIELD_BYTES} bytes")

    def _on_part_end(self) -> None:
        if self._field_name is not None:
            self.fields[self._field_name] = self._field_value.decode("utf-8", "replace")

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes, as they arrive."""
        parser = MultipartParser(
            self.boundary,
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
        try:
            async for chunk in self.source:
                parser.write(chunk)
                for piece in self._pending:
                    yield piece
                self._pending.clear()
            parser.finalize()
        except MultipartParseError as exc:
            raise BadRequest(f"malformed multipart/form-data body: {exc}") from None
        if self._files == 0:
            raise BadRequest("the form has no file part")


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart/form-data Content-Type."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    return boundary
