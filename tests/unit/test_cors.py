"""The CORS policy every front answers with: preflights, actual answers, refused origins."""

from __future__ import annotations

import httpx
from starlette.types import Receive, Scope, Send

from shared.http.cors import CorsMiddleware, CorsPolicy, is_preflight

SITE = "https://player.example"


def test_any_origin_is_answered_with_a_star_and_no_vary() -> None:
    policy = CorsPolicy(["*"])
    headers = dict(policy.actual(SITE))
    assert headers["access-control-allow-origin"] == "*"
    exposed = headers["access-control-expose-headers"].split(", ")
    assert {"Content-Range", "Content-Length", "ETag", "Accept-Ranges"} <= set(exposed)
    assert "vary" not in headers
    assert policy.actual(None) == ()
    assert policy.actual_bytes(SITE.encode()).startswith(b"access-control-allow-origin: *\r\n")


def test_a_listed_origin_is_echoed_with_vary_and_others_get_only_vary() -> None:
    policy = CorsPolicy([SITE + "/"])
    headers = dict(policy.actual(SITE))
    assert headers["access-control-allow-origin"] == SITE and headers["vary"] == "Origin"
    assert policy.actual("https://elsewhere.example") == (("vary", "Origin"),)
    assert policy.actual(None) == (("vary", "Origin"),)
    assert policy.actual_bytes(b"https://elsewhere.example") == b"vary: Origin\r\n"
    assert b"access-control-allow-origin: https://player.example\r\n" in policy.actual_bytes(
        SITE.encode()
    )


def test_no_origin_allowed_means_no_cors_headers() -> None:
    policy = CorsPolicy([])
    assert dict(policy.actual(SITE)) == {"vary": "Origin"}
    assert dict(policy.preflight(SITE, "GET", "range")) == {"vary": "Origin"}


def test_a_preflight_for_range_reads_is_allowed() -> None:
    headers = dict(CorsPolicy([SITE]).preflight(SITE, "GET", "Range, if-none-match"))
    assert headers["access-control-allow-origin"] == SITE
    assert headers["access-control-allow-methods"] == "GET, HEAD"
    assert "Range" in headers["access-control-allow-headers"]
    assert headers["access-control-max-age"] == "86400"


def test_a_preflight_for_another_method_or_header_gets_no_cors_headers() -> None:
    policy = CorsPolicy(["*"])
    assert policy.preflight(SITE, "DELETE", None) == ()
    assert policy.preflight(SITE, "GET", "range, authorization") == ()
    assert dict(policy.preflight(SITE, "head", ""))["access-control-allow-origin"] == "*"


def test_an_api_policy_allows_its_own_methods_and_headers() -> None:
    policy = CorsPolicy(["*"], methods=["GET", "POST"], request_headers=["Authorization"])
    assert policy.preflight(SITE, "POST", "authorization") != ()
    assert policy.preflight(SITE, "POST", "range") == ()


def test_only_options_with_an_origin_and_a_method_is_a_preflight() -> None:
    assert is_preflight("OPTIONS", SITE, "GET")
    assert not is_preflight("OPTIONS", None, "GET")
    assert not is_preflight("OPTIONS", SITE, None)
    assert not is_preflight("GET", SITE, "GET")


async def test_the_middleware_answers_by_path_and_drops_inner_cors_headers() -> None:
    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"access-control-allow-origin", b"*"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    app = CorsMiddleware(inner, [("/origin/", CorsPolicy([SITE])), ("/api/", CorsPolicy([]))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://origin") as client:
        read = await client.get("/origin/a.m4s", headers={"Origin": SITE})
        assert read.headers.get_list("access-control-allow-origin") == [SITE]
        asked = {"Origin": SITE, "Access-Control-Request-Method": "GET"}
        answer = await client.options("/origin/a.m4s", headers=asked)
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == SITE
        api = await client.get("/api/x", headers=asked)
        assert "access-control-allow-origin" not in api.headers
        # A path no policy covers is passed through as the app answered it.
        other = await client.get("/other", headers={"Origin": SITE})
        assert other.headers["access-control-allow-origin"] == "*"
