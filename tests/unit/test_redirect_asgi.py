"""The redirect answered in the HTTP parser (``reply``) says exactly what the ASGI app says."""

from __future__ import annotations

from urllib.parse import parse_qsl

import httpx
import pytest

from services.redirector.app import build
from services.redirector.reply import _query_value, redirect_reply
from services.redirector.schemas import CdnTarget
from services.redirector.service import Redirector
from services.redirector.settings import Settings

UNREACHABLE_DB = "postgresql+asyncpg://postgres@127.0.0.1:1/unused"

QUERIES = [
    {"video": "http://s1.origin-cluster/video/1/a.m3u8?exp=1&sig=2"},
    {"video": "http://s2.origin-cluster"},
    {"video": "https://evil.example/x"},
    {"video": "garbage"},
    {"video": ""},
    {"video": "http://s1.origin-cluster/a b"},
]


@pytest.mark.parametrize(
    "raw",
    [
        b"video=a",
        b"x=1&video=http%3A%2F%2Fa%2Fb%3Fc%3D1",
        b"video=a+b&video=c",
        b"video",
        b"video=",
        b"videos=1",
        b"a=1",
        b"video=%E2%82%AC",
    ],
)
def test_query_value_decodes_as_the_framework(raw: bytes) -> None:
    expected = None
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key == "video":
            expected = value
    assert _query_value(raw, "video") == expected


def _fields(raw: bytes) -> dict[str, str]:
    lines = raw.decode("latin-1").split("\r\n")
    return dict(line.split(": ", 1) for line in lines if line)


@pytest.mark.parametrize(
    ("status_code", "cdn_target", "cdn_location"),
    [
        (302, "host", "http://cdn.test/s2/"),
        (308, "host", "http://cdn.test/s2/"),
        (302, "edges", "/"),
    ],
)
async def test_both_paths_answer_the_same(
    status_code: int, cdn_target: CdnTarget, cdn_location: str
) -> None:
    settings = Settings(
        redirector_cdn_host="cdn.test",
        redirector_ratio=2,
        redirector_status_code=status_code,
        redirector_cdn_target=cdn_target,
        database_url=UNREACHABLE_DB,
    )
    # Two instances alike, each counting its own requests from the same start.
    inline = Redirector(settings)
    transport = httpx.ASGITransport(app=build(settings))
    seen = []
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for params in QUERIES * 2:
            r = await c.get("/", params=params)
            reply = redirect_reply(inline, r.request.url.query, [], None)
            assert reply is not None
            status, fields, body = reply
            headers = _fields(fields)
            assert status == r.status_code
            assert headers.get("location") == r.headers.get("location")
            assert headers.get("cache-control") == r.headers.get("cache-control")
            assert headers["content-length"] == r.headers["content-length"]
            assert body == r.content
            seen.append((status, headers.get("location")))
    assert [status for status, _ in seen[:6]] == [status_code] * 2 + [400] * 4
    assert [location for _, location in seen[:2]] == [
        "http://s1.origin-cluster/video/1/a.m3u8?exp=1&sig=2",
        cdn_location,
    ]


async def test_other_paths_go_to_the_framework() -> None:
    transport = httpx.ASGITransport(
        app=build(Settings(redirector_instance_id="unit-1", database_url=UNREACHABLE_DB))
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/whoami")).json() == {"instance": "unit-1"}
        assert (await c.get("/")).json()["source"] == "environment"
        assert (await c.get("/config")).json()["cdn_target"] == "host"
        assert (await c.post("/", json={"ratio": 2})).status_code == 401
        assert (await c.get("/nope")).json()["error"] == "not_found"


def test_long_queries_are_decoded_without_the_cache() -> None:
    video = b"video=http%3A%2F%2Fs1.origin-cluster%2Fv"
    redirector = Redirector(
        Settings(redirector_cdn_host="cdn.test", redirector_ratio=1, database_url=UNREACHABLE_DB)
    )
    for query in (b"pad=" + b"x" * 5000 + b"&" + video, video):
        reply = redirect_reply(redirector, query, [], None)
        assert reply is not None and reply[0] == 302
        assert _fields(reply[1])["location"] == "http://s1.origin-cluster/v"
