"""Hostile uploads to the streamed upload service, run as a real process (Granian).

Every refusal is a JSON 4xx that leaves nothing behind: no stored object or temporary file, no
row, no queued job, no Redis key. Refusals whose danger is their cost (thousands of form fields,
a huge field) come within the budget while a normal request beside them is not held up.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.media import MIB, make_clip
from tests.support.security import (
    Cost,
    Leftovers,
    assert_cheap,
    assert_nothing_kept,
    cheap,
    refused,
)
from tests.support.upload import OwnService, own_service, send_raw

FORM_MAX_FIELDS = 16
FORM_MAX_TEXT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def upload(test_env: dict[str, str], test_root: Path) -> Iterator[OwnService]:
    with own_service(
        "upload",
        test_env,
        test_root / "logs" / "security-upload",
        UPLOAD_MAX_BYTES=str(64 * MIB),
        UPLOAD_FORM_MAX_FIELDS=str(FORM_MAX_FIELDS),
        UPLOAD_FORM_MAX_TEXT_BYTES=str(FORM_MAX_TEXT_BYTES),
    ) as service:
        yield service


@pytest.fixture(scope="module")
async def kept(upload: OwnService) -> AsyncIterator[Resources]:
    async with upload.resources() as res:
        yield res


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> bytes:
    return make_clip(media_dir / "security-upload.mp4", seconds=1, size="160x90").read_bytes()


@pytest.fixture
async def client(upload: OwnService, account: Account) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=upload.url, timeout=30, headers=account.headers) as c:
        yield c


def _field(name: str, value: bytes) -> bytes:
    return (
        f'--B\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
    )


def _file(data: bytes, filename: str = "clip.mp4") -> bytes:
    head = (
        f'--B\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    )
    return head.encode() + data + b"\r\n"


def _form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--B--\r\n"


FORM = {"Content-Type": "multipart/form-data; boundary=B"}


def _timed_form(upload: OwnService, body: bytes, account: Account) -> tuple[Cost, httpx.Response]:
    with (
        httpx.Client(base_url=upload.url, timeout=30, headers=account.headers) as hostile,
        httpx.Client(base_url=upload.url, timeout=30) as beside,
    ):
        return cheap(
            lambda: hostile.post("/api/videos", content=body, headers=FORM),
            lambda: beside.get("/readyz"),
        )


async def _cheap_form(upload: OwnService, body: bytes, account: Account) -> httpx.Response:
    """Send ``body`` as a form, timed beside a normal request; the last answer."""
    cost, response = await asyncio.to_thread(_timed_form, upload, body, account)
    assert_cheap(cost)
    return response


async def test_thousands_of_form_fields_are_refused_at_the_limit(
    upload: OwnService, kept: Resources, client: httpx.AsyncClient, clip: bytes, account: Account
) -> None:
    before = await Leftovers.take(kept)
    fields = [_field(f"f{i}", b"x" * 40) for i in range(3000)]
    response = await _cheap_form(upload, _form(*fields, _file(clip)), account)
    body = refused(response, 413, error="payload_too_large", mentions="fields")
    assert body["max_fields"] == FORM_MAX_FIELDS
    # Fields after the file count as well; the file's bytes then go nowhere.
    late = _form(_file(clip), *[_field(f"f{i}", b"x") for i in range(FORM_MAX_FIELDS + 1)])
    refused(await client.post("/api/videos", content=late, headers=FORM), 413, mentions="fields")
    await assert_nothing_kept(kept, before)


async def test_form_field_bytes_are_refused_at_the_limit(
    upload: OwnService, kept: Resources, client: httpx.AsyncClient, clip: bytes, account: Account
) -> None:
    before = await Leftovers.take(kept)
    huge = _form(_field("description", b"d" * MIB), _file(clip))
    response = await _cheap_form(upload, huge, account)
    body = refused(response, 413, error="payload_too_large", mentions="bytes")
    assert body["max_bytes"] == FORM_MAX_TEXT_BYTES
    # Many fields under the count, each under the limit, together over it; an unknown field's
    # value counts as much as a known one's; so do part headers.
    spread = _form(*[_field(f"n{i}", b"v" * 8000) for i in range(10)], _file(clip))
    refused(await client.post("/api/videos", content=spread, headers=FORM), 413, mentions="bytes")
    # Part headers count too: each line is capped by the parser (4 KiB), all of them here.
    padded = b"".join(
        f'--B\r\nContent-Disposition: form-data; name="n{i}"\r\n'.encode()
        + b"".join(b"X-Pad: " + b"p" * 4000 + b"\r\n" for _ in range(3))
        + b"\r\nv\r\n"
        for i in range(8)
    )
    response = await client.post("/api/videos", content=_form(padded, _file(clip)), headers=FORM)
    refused(response, 413, mentions="bytes")
    one_line = b'--B\r\nContent-Disposition: form-data; name="title"\r\nX-Pad: ' + b"p" * 70_000
    response = await client.post("/api/videos", content=_form(one_line), headers=FORM)
    refused(response, 400, mentions="malformed")
    await assert_nothing_kept(kept, before)


async def test_bad_titles_and_filenames_are_refused_before_the_body_is_stored(
    upload: OwnService, kept: Resources, client: httpx.AsyncClient, clip: bytes
) -> None:
    before = await Leftovers.take(kept)
    raw = {"Content-Type": "video/mp4"}
    big = clip + b"\0" * (8 * MIB)  # refused before it is stored, so never probed
    for query, mentions in [
        (f"title={quote('a' * 201)}", "200 characters"),
        ("title=a%00b", "control character"),
        ("title=line%0Abreak", "control character"),
        (f"filename={quote('f' * 256)}", "255 characters"),
        ("filename=evil%E2%80%AEgpj.mp4", "control character"),  # right-to-left override
        (f"description={quote('d' * 5001)}", "5000 characters"),
        ("tags=" + ",".join(f"t{i}" for i in range(33)), "32 tags"),
        (f"tags=ok,{'t' * 65}", "64 characters"),
    ]:
        response = await client.post(f"/api/videos?{query}", content=big, headers=raw)
        refused(response, 400, error="invalid_metadata", mentions=mentions)
    # A refused PUT frees the id it claimed.
    video_id = uuid.uuid4()
    at = f"/api/videos/{video_id}"
    refused(await client.put(f"{at}?title=a%00b", content=clip, headers=raw), 400)
    form_cases = [
        (_form(_field("title", b"a\0b"), _file(big)), "control character"),
        (_form(_field("title", "é".encode() * 201), _file(big)), "200 characters"),
        (_form(_field("title", b"\xff"), _file(big)), "not UTF-8"),
        (_form(_field("title", b"a"), _field("title", b"b"), _file(big)), "twice"),
        (_form(_file(big, filename="f" * 256)), "255 characters"),
        # After the file: the stream the store was writing fails, and the file goes too.
        (_form(_file(big), _field("tags", b"ok,bad\x01tag")), "control character"),
    ]
    for form, mentions in form_cases:
        refused(await client.put(at, content=form, headers=FORM), 400, mentions=mentions)
    await assert_nothing_kept(kept, before)

    # A long but valid filename is kept as it is; the title made from it is cut to fit.
    long_name = "n" * 240 + ".mp4"
    created = await client.put(at, content=_form(_file(clip, filename=long_name)), headers=FORM)
    assert created.status_code == 201, created.text
    video = created.json()
    assert video["filename"] == long_name and video["title"] == long_name[:200]


async def test_numeric_and_typed_headers_are_checked_before_the_body(
    upload: OwnService, kept: Resources, client: httpx.AsyncClient
) -> None:
    before = await Leftovers.take(kept)
    refused(
        await client.post("/api/videos", content=b"x", headers={"Content-Type": "text/html"}),
        415,
        error="unsupported_media_type",
    )
    refused(
        await client.post(
            "/api/videos",
            content=b"x",
            headers={"Content-Type": f"multipart/form-data; boundary={'b' * 71}"},
        ),
        400,
        mentions="boundary",
    )
    refused(
        await client.post(
            "/api/videos",
            content=b"x",
            headers={"Content-Type": "video/mp4", "Content-Digest": "sha-256=:not base64:"},
        ),
        400,
    )
    await assert_nothing_kept(kept, before)


async def test_error_bodies_carry_no_internal_text(
    upload: OwnService, kept: Resources, client: httpx.AsyncClient
) -> None:
    before = await Leftovers.take(kept)
    # The parser's own message names what it expected where: none of it reaches the client.
    body = refused(await client.post("/api/videos", content=b"--Bx", headers=FORM), 400)
    assert body["detail"] == "malformed multipart/form-data body"
    # Bytes that are not media: ffprobe's words name the stored file; they stay in the log.
    response = await client.post(
        "/api/videos", content=b"not media" * 1000, headers={"Content-Type": "video/mp4"}
    )
    body = refused(response, 400, error="not_media")
    assert upload.settings().storage_root.as_posix() not in response.text
    assert "/" not in body["detail"] and "ffprobe" not in body["detail"], body
    await assert_nothing_kept(kept, before)


async def test_header_blocks_are_bounded_by_the_server(upload: OwnService) -> None:
    # HTTP/2: a header list over UPLOAD_H2_MAX_HEADERS_BYTES is Granian's 431 (no JSON body),
    # answered before the app runs; far more ends the connection.
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30) as h2:
        response = await h2.get(f"{upload.url}/readyz", headers={"X-Big": "a" * 70_000})
    assert (response.http_version, response.status_code) == ("HTTP/2", 431), response
    # HTTP/1.1: a header block past Granian's read buffer, likewise.
    head = b"GET /readyz HTTP/1.1\r\nHost: u\r\nX-Big: " + b"a" * (2 * MIB) + b"\r\n\r\n"
    response = await asyncio.to_thread(send_raw, upload.url, head)
    assert response.status_code == 431 and response.content == b"", response
