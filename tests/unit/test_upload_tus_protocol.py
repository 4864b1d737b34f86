"""tus header parsing and the streaming form parser, without any server."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from services.chunked_upload.parts import choose_part_bytes
from services.chunked_upload.tus import (
    format_metadata,
    parse_checksum,
    parse_concat,
    parse_metadata,
)
from services.upload.form import StreamingForm
from shared.core.errors import BadRequest


def test_metadata_round_trip_and_errors() -> None:
    header = format_metadata({"filename": "a b.mp4", "title": "Été", "flag": ""})
    assert parse_metadata(header) == {"filename": "a b.mp4", "title": "Été", "flag": ""}
    for bad in ("key not-base64!", "k YQ==,k YQ==", "a b c"):
        with pytest.raises(BadRequest):
            parse_metadata(bad)


def test_checksum_parsing() -> None:
    digest = hashlib.sha256(b"x").digest()
    parsed = parse_checksum(f"sha256 {base64.b64encode(digest).decode()}")
    assert parsed is not None and parsed.digest == digest
    with pytest.raises(BadRequest):
        parse_checksum("crc32 AAAA")
    with pytest.raises(BadRequest):
        parse_checksum("sha1 " + base64.b64encode(b"short").decode())


def test_concat_parsing() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert parse_concat("partial", "/files").kind == "partial"
    final = parse_concat(f"final;/files/{a} http://host:8002/files/{b}", "/files")
    assert final is not None and final.partials == [a, b]
    for bad in ("final;", f"final;/other/{a}", f"final;/files/{a} /files/{a}", "whole"):
        with pytest.raises(BadRequest):
            parse_concat(bad, "/files")


def test_part_size_respects_store_minimum_and_part_count() -> None:
    assert choose_part_bytes(64 * 1024, 1, 10 * 2**20) == 64 * 1024
    assert choose_part_bytes(64 * 1024, 5 * 2**20, 10 * 2**20) == 5 * 2**20
    assert choose_part_bytes(8 * 2**20, 5 * 2**20, 200 * 2**30) * 9_999 >= 200 * 2**30


async def test_streaming_form_yields_the_file_and_keeps_fields() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="title"\r\n\r\nMy clip\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="c.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + b"\x00\x01" * 5000 + b"\r\n--XyZ--\r\n"
    )

    async def pieces():  # type: ignore[no-untyped-def]
        for i in range(0, len(body), 777):
            yield body[i : i + 777]

    form = StreamingForm(pieces(), b"XyZ")
    data = b"".join([chunk async for chunk in form.file_chunks()])
    assert data == b"\x00\x01" * 5000
    assert form.fields == {"title": "My clip"} and form.filename == "c.mp4"

    async def no_file():  # type: ignore[no-untyped-def]
        yield b'--XyZ\r\nContent-Disposition: form-data; name="t"\r\n\r\nv\r\n--XyZ--\r\n'

    with pytest.raises(BadRequest):
        [c async for c in StreamingForm(no_file(), b"XyZ").file_chunks()]
