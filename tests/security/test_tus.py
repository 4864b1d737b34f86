"""Hostile requests to the tus service (chunked_upload), run as a real process (Granian).

Every refusal is the status the tus 1.0.0 specification gives (or a 400, 414 or 431 where it
gives none) with the platform's JSON body, and leaves nothing behind: no upload or video row, stored
object, queued job or Redis key. Header blocks too big for the server's own buffer get
Granian's bare 431 before the app runs; that is the one refusal without a JSON body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.media import MIB, make_clip
from tests.support.paths import ROOT
from tests.support.security import Leftovers, assert_cheap, assert_nothing_kept, cheap, refused
from tests.support.upload import OwnService, own_service, send_raw

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
MAX_BYTES = 64 * MIB
METADATA_MAX_BYTES = 8 * 1024
HEADER_MAX_BYTES = 16 * 1024
BUFFER_BYTES = 64 * 1024
ALLOWED_ENDPOINT = "http://127.0.0.1:9/files/"


@pytest.fixture(scope="module")
def tus(test_env: dict[str, str], test_root: Path) -> Iterator[OwnService]:
    with own_service(
        "chunked_upload",
        test_env,
        test_root / "logs" / "security-tus",
        CHUNKED_UPLOAD_MAX_BYTES=str(MAX_BYTES),
        CHUNKED_UPLOAD_METADATA_MAX_BYTES=str(METADATA_MAX_BYTES),
        CHUNKED_UPLOAD_MAX_HEADER_BYTES=str(HEADER_MAX_BYTES),
        CHUNKED_UPLOAD_HTTP1_BUFFER_BYTES=str(BUFFER_BYTES),
        CHUNKED_UPLOAD_PAGE_ENDPOINTS=json.dumps([ALLOWED_ENDPOINT]),
    ) as service:
        yield service


@pytest.fixture(scope="module")
async def kept(tus: OwnService) -> AsyncIterator[Resources]:
    async with tus.resources() as res:
        yield res


@pytest.fixture
async def client(tus: OwnService, account: Account) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tus.url, timeout=30, headers=account.headers) as c:
        yield c


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _timed(
    tus: OwnService, account: Account, hostile: Callable[[httpx.Client], httpx.Response]
) -> httpx.Response:
    with (
        httpx.Client(base_url=tus.url, timeout=30, headers=account.headers) as sender,
        httpx.Client(base_url=tus.url, timeout=30) as beside,
    ):
        cost, response = cheap(lambda: hostile(sender), lambda: beside.get("/readyz"))
    assert_cheap(cost)
    return response


async def _cheap(
    tus: OwnService, account: Account, hostile: Callable[[httpx.Client], httpx.Response]
) -> httpx.Response:
    """``hostile``, sent as ``account``, timed beside a normal request; its last answer."""
    return await asyncio.to_thread(_timed, tus, account, hostile)


async def test_bad_titles_and_filenames_are_refused_at_creation(
    tus: OwnService, kept: Resources, client: httpx.AsyncClient, media_dir: Path
) -> None:
    before = await Leftovers.take(kept)
    for metadata, mentions in [
        (f"title {b64('a' * 201)}", "200 characters"),
        ("title " + b64("a\0b"), "control character"),
        (f"filename {b64('f' * 256)}", "255 characters"),
        (f"name {b64('f' * 256)}", "255 characters"),
        ("filename " + b64("x\u202egpj.mp4"), "control character"),
        (f"description {b64('d' * 5001)}", "5000 characters"),
        (f"tags {b64(','.join(f't{i}' for i in range(33)))}", "32 tags"),
        ("filetype " + b64("video/mp4\r\nX: y"), "control character"),
    ]:
        headers = {**TUS, "Upload-Length": "100", "Upload-Metadata": metadata}
        response = await client.post("/files/", headers=headers)
        refused(response, 400, error="invalid_metadata", mentions=mentions)
    # Refused with a body too (creation-with-upload): nothing of it is stored.
    headers = {**PATCH, "Upload-Length": "5", "Upload-Metadata": "title " + b64("\0")}
    refused(await client.post("/files/", headers=headers, content=b"hello"), 400)
    await assert_nothing_kept(kept, before)

    # A long but valid filename is kept as it is; the title made from it is cut to fit.
    clip = make_clip(media_dir / "security-tus.mp4", seconds=1, size="160x90").read_bytes()
    long_name = "n" * 240 + ".mp4"
    headers = {
        **PATCH,
        "Upload-Length": str(len(clip)),
        "Upload-Metadata": f"filename {b64(long_name)}",
    }
    created = await client.post("/files/", headers=headers, content=clip)
    assert created.status_code == 201, created.text
    video = (await client.get(f"/api/videos/{created.headers['video-id']}")).json()
    assert video["filename"] == long_name and video["title"] == long_name[:200]


async def test_upload_metadata_is_bounded(
    tus: OwnService, kept: Resources, client: httpx.AsyncClient, account: Account
) -> None:
    before = await Leftovers.take(kept)
    # Over the bytes allowed but within the header block: the app's JSON 431, cheaply.
    huge = f"title {b64('t')},pad {'A' * METADATA_MAX_BYTES}"
    response = await _cheap(
        tus,
        account,
        lambda c: c.post("/files/", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": huge}),
    )
    refused(response, 431, error="headers_too_large", mentions="Upload-Metadata")
    for metadata, mentions in [
        (",".join(f"k{i} {b64('v')}" for i in range(17)), "16 pairs"),
        (f"ti/tle {b64('x')}", "malformed"),  # not a token
        (f"tïtle {b64('x')}", "malformed"),  # not ASCII
        (f"{'k' * 65} {b64('x')}", "malformed"),
        (f"title {b64('x')} extra", "malformed"),
        (f"title {b64('x')},,k", "malformed"),  # an empty pair
        ("title not-base64!", "base64"),
        ("title YQ", "base64"),  # padding missing
        ("title " + b64(b"\xff\xfe"), "UTF-8"),
        (f"title {b64('a')},title {b64('b')}", "twice"),
        (f"other {b64('o' * 1025)}", "1024 characters"),
        ("other " + b64("\0"), "control character"),
    ]:
        headers = {**TUS, "Upload-Length": "1", "Upload-Metadata": metadata.encode()}
        response = await client.post("/files/", headers=headers)
        refused(response, 400, mentions=mentions)
    await assert_nothing_kept(kept, before)


def _head_block(count: int, size: int) -> bytes:
    value = b"v" * (size // count)
    lines = b"".join(b"X-H%d: %s\r\n" % (i, value) for i in range(count))
    return (
        b"POST /files/ HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 1\r\n" + lines
    )


async def test_header_blocks_are_bounded(
    tus: OwnService, kept: Resources, account: Account
) -> None:
    before = await Leftovers.take(kept)
    # Over the app's bounds, within Granian's buffer: the platform's JSON 431.
    for count, size, mentions in [(1, 20 * 1024, "bytes"), (70, 70 * 40, "headers")]:
        block = _head_block(count, size) + b"\r\n"
        response = await _cheap(tus, account, lambda _, block=block: send_raw(tus.url, block))
        refused(response, 431, error="headers_too_large", mentions=mentions)
    # A request target longer than tus needs: the JSON 414.
    long_target = b"GET /files/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    response = await _cheap(tus, account, lambda _: send_raw(tus.url, long_target))
    refused(response, 414, error="uri_too_long")
    # Past Granian's buffer (or its 100 headers): its own bare 431, before the app runs.
    for count, size in [(1, 1024 * 1024), (1, BUFFER_BYTES + 1), (101, 101 * 10)]:
        block = _head_block(count, size) + b"\r\n"
        response = await _cheap(tus, account, lambda _, block=block: send_raw(tus.url, block))
        assert response.status_code == 431 and response.content == b"", response
    await assert_nothing_kept(kept, before)


async def test_numeric_and_protocol_headers_are_checked(
    tus: OwnService, kept: Resources, client: httpx.AsyncClient
) -> None:
    before = await Leftovers.take(kept)

    async def create(**headers: str | bytes) -> httpx.Response:
        return await client.post("/files/", headers={**TUS, **headers})

    for length in ["abc", "-1", "+5", "1e3", "0x10", "5.0", "1 2", "9" * 20, "\u00b2"]:
        refused(
            await create(**{"Upload-Length": length.encode("latin-1")}), 400, mentions="integer"
        )
    body = refused(await create(**{"Upload-Length": str(MAX_BYTES + 1)}), 413)
    assert body["max_bytes"] == MAX_BYTES
    refused(await create(), 400, mentions="Upload-Length")
    refused(await create(**{"Upload-Length": "1", "Upload-Defer-Length": "1"}), 400)
    refused(await create(**{"Upload-Defer-Length": "2"}), 400, mentions="Defer")
    for version in [None, "0.2.2", "1.0"]:
        headers = {"Upload-Length": "1", **({"Tus-Resumable": version} if version else {})}
        response = await client.post("/files/", headers=headers)
        refused(response, 412, error="precondition_failed")
        assert response.headers["tus-version"] == "1.0.0"
    for checksum in ["crc32 AAAA", "sha256", "sha256 !!!", f"sha256 {b64(b'short')}", "SHA256 x"]:
        headers = {**PATCH, "Upload-Length": "1", "Upload-Checksum": checksum}
        refused(await client.post("/files/", headers=headers, content=b"x"), 400)
    concat = "final;" + " ".join(f"/files/{i:08x}-0000-0000-0000-000000000000" for i in range(101))
    refused(await create(**{"Upload-Concat": concat}), 400, mentions="at most 100")
    refused(await create(**{"Upload-Concat": "final;/elsewhere/1"}), 400)
    # Content-Length that is not a plain number never reaches the app: Granian's own 400.
    for length in [b"abc", b"-1", b"9" * 30]:
        raw = b"POST /files/ HTTP/1.1\r\nHost: t\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 1\r\n"
        head = raw + b"Content-Length: " + length + b"\r\n\r\nx"
        answer = await asyncio.to_thread(send_raw, tus.url, head)
        assert answer.status_code == 400, answer
    await assert_nothing_kept(kept, before)

    # PATCH on an upload of five bytes: nothing a refusal leaves changes its offset.
    created = await create(**{"Upload-Length": "5"})
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    for offset in ["-1", "abc", "9" * 20, "", "\u00b2"]:
        response = await client.patch(
            url, headers={**PATCH, "Upload-Offset": offset.encode("latin-1")}, content=b"x"
        )
        refused(response, 400, mentions="Upload-Offset")
    refused(await client.patch(url, headers={**PATCH, "Upload-Offset": "3"}, content=b"x"), 409)
    wrong_type = {**TUS, "Content-Type": "application/octet-stream", "Upload-Offset": "0"}
    refused(await client.patch(url, headers=wrong_type, content=b"x"), 415)
    refused(
        await client.patch(url, headers={**PATCH, "Upload-Offset": "0"}, content=b"123456"), 413
    )
    mismatch = f"sha256 {b64(hashlib.sha256(b'other').digest())}"
    response = await client.patch(
        url, headers={**PATCH, "Upload-Offset": "0", "Upload-Checksum": mismatch}, content=b"12"
    )
    refused(response, 460, error="checksum_mismatch")
    head = await client.head(url, headers=TUS)
    assert head.headers["upload-offset"] == "0"
    assert (await client.delete(url, headers=TUS)).status_code == 204
    await assert_nothing_kept(kept, before)


def test_the_upload_page_sends_only_where_it_may(tus: OwnService) -> None:
    page = httpx.get(f"{tus.url}/upload")
    assert page.status_code == 200
    listed = html.escape(json.dumps([ALLOWED_ENDPOINT]), quote=True)
    assert f'<meta name="upload-endpoints" content="{listed}">' in page.text
    script = ROOT / "services" / "chunked_upload" / "static" / "endpoint.js"
    cases = {
        "": ("/files/", False),
        "/files/": ("/files/", False),
        "/other/path?x=1": ("/other/path?x=1", False),
        ALLOWED_ENDPOINT: (ALLOWED_ENDPOINT, False),
        "//evil.example/files/": ("/files/", True),
        "/\\evil.example/files/": ("/files/", True),
        "/\t/evil.example/files/": ("/files/", True),
        "https://evil.example/files/": ("/files/", True),
        "http://127.0.0.1:9/files": ("/files/", True),  # not exactly the listed endpoint
        "javascript:alert(1)": ("/files/", True),
        "files/": ("/files/", True),
        f"{tus.url}/files/": ("/files/", True),  # same origin, but not a path
    }
    program = (
        f"const E = require({json.dumps(str(script))});"
        f"const cases = {json.dumps(list(cases))};"
        f"const page = {json.dumps(tus.url + '/upload?endpoint=x')};"
        f"const allowed = {json.dumps([ALLOWED_ENDPOINT])};"
        "console.log(JSON.stringify(cases.map(c => E.choose(c, page, allowed))));"
    )
    done = subprocess.run(["node", "-e", program], capture_output=True, text=True, check=True)
    chosen = json.loads(done.stdout)
    for (requested, (endpoint, refused_)), got in zip(cases.items(), chosen, strict=True):
        assert got == {"endpoint": endpoint, "refused": refused_}, (requested, got)
