"""The plain-ASGI redirect path answers exactly as the FastAPI route does."""

from __future__ import annotations

from urllib.parse import parse_qsl

import httpx
import pytest

from services.redirector.app import build
from services.redirector.asgi import _query_value, redirect_reply
from services.redirector.service import Redirector
from services.redirector.settings import Settings

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


async def test_both_paths_answer_the_same() -> None:
    answers = {}
    for fast in (True, False):
        transport = httpx.ASGITransport(
            app=build(
                Settings(
                    redirector_cdn_host="cdn.test",
                    redirector_ratio=2,
                    redirector_fast_path=fast,
                    database_url="postgresql+asyncpg://postgres@127.0.0.1:1/unused",
                )
            )
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            seen = []
            for params in QUERIES * 2:
                r = await c.get("/", params=params)
                body = r.json()["error"] if r.status_code >= 400 else None
                seen.append(
                    (r.status_code, r.headers.get("location"), r.headers.get("cache-control"), body)
                )
            answers[fast] = seen
    assert answers[True] == answers[False]
    statuses = [s for s, *_ in answers[True]]
    assert statuses[:6] == [302, 302, 400, 400, 400, 400]
    locations = [loc for _, loc, *_ in answers[True] if loc]
    assert locations[:2] == [
        "http://s1.origin-cluster/video/1/a.m3u8?exp=1&sig=2",
        "http://cdn.test/s2/",
    ]


async def test_other_paths_go_to_the_framework() -> None:
    transport = httpx.ASGITransport(
        app=build(
            Settings(
                redirector_instance_id="unit-1",
                database_url="postgresql+asyncpg://postgres@127.0.0.1:1/unused",
            )
        )
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/whoami")).json() == {"instance": "unit-1"}
        assert (await c.get("/")).json()["source"] == "environment"
        assert (await c.post("/", json={"ratio": 2})).status_code == 401
        assert (await c.get("/nope")).json()["error"] == "not_found"


def test_long_queries_are_decoded_without_the_cache() -> None:
    video = b"video=http%3A%2F%2Fs1.origin-cluster%2Fv"
    redirector = Redirector(
        Settings(
            redirector_cdn_host="cdn.test",
            redirector_ratio=1,
            database_url="postgresql+asyncpg://postgres@127.0.0.1:1/unused",
        )
    )
    for query in (b"pad=" + b"x" * 5000 + b"&" + video, video):
        reply = redirect_reply(redirector, query, [], None)
        assert reply is not None and reply[0] == 302
        assert reply[1][0] == (b"location", b"http://s1.origin-cluster/v")
