"""Hostile requests for objects, against a running origin and a running edge in front of it.

One test per attack class, each run against both servers where both serve it: a path built to
be expensive, signatures that are not hex, keys that are not canonical, an expiry far in the
future, a legacy signature re-split into another object's, floods of requests for a missing
object, errors that could show internals, and a player page pointed at another server. Every
refusal is a JSON error, costs next to nothing and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright

from shared.core.settings import BaseServiceSettings
from shared.core.signing import (
    CLOCK_SKEW_SECONDS,
    gateway_signature,
    query_message,
    token_message,
)
from shared.runtime.resources import Resources
from tests.support.browser import launch_chromium
from tests.support.edge import origin_object_gets, start_edge
from tests.support.polling import wait_for
from tests.support.processes import Proc, Processes
from tests.support.security import Leftovers, assert_cheap, assert_nothing_kept, cheap, refused
from tests.support.signing import signed, signer_of
from tests.support.storage import digest, put_object

NEGATIVE_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class Stack:
    origin: Proc
    edge: Proc
    cache_dir: Path

    def url(self, target: str) -> str:
        return (self.origin if target == "origin" else self.edge).url


@dataclass(frozen=True)
class Segment:
    """A stored object the normal requests of the tests ask for."""

    prefix: str
    key: str
    data: bytes


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str], test_root: Path) -> Iterator[Stack]:
    """One origin and one edge in front of it, shared by this module's tests."""
    procs = Processes(test_root / "logs" / "security-delivery", test_env)
    cache_dir = test_root / "security-delivery-cache"
    try:
        origin = procs.service("origin")
        edge = start_edge(
            procs,
            origin.url,
            cache_dir,
            EDGE_NEGATIVE_TTL_SECONDS=str(NEGATIVE_TTL_SECONDS),
            EDGE_PREFETCH_NEXT_SEGMENT="false",
        )
        yield Stack(origin, edge, cache_dir)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def segment(stack: Stack) -> Segment:
    prefix = new_prefix()
    key = prefix + "360p/seg_00001.m4s"
    data = os.urandom(200_000)
    put_object(key, data, "video/iso.segment")
    for base in (stack.origin.url, stack.edge.url):  # the edge has it cached from here on
        assert httpx.get(signed(base, key)).content == data
    return Segment(prefix, key, data)


@pytest.fixture(params=["origin", "edge"])
def target(request: pytest.FixtureRequest, stack: Stack) -> str:
    """The base URL of the server under attack."""
    return stack.url(request.param)


def new_prefix() -> str:
    return f"videos/{uuid.uuid4()}/hls/"


def secret() -> str:
    return BaseServiceSettings().signing_secret


def mac(message: str) -> str:
    return hmac.new(secret().encode(), message.encode(), hashlib.sha256).hexdigest()


def raw_get(base: str, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET ``target`` exactly as written: httpx would resolve ``.`` and ``..`` segments first."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", target, headers=headers or {})
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


def cache_files(cache_dir: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(cache_dir))


async def test_a_60_kb_token_path_is_refused_cheaply_beside_normal_playback(
    target: str, stack: Stack, segment: Segment, res: Resources
) -> None:
    before, files = await Leftovers.take(res), cache_files(stack.cache_dir)
    signer = signer_of()
    hostile = {
        # A valid token over a path 30 000 folders deep: the key check refuses it unread.
        f"/origin/t/{signer.make_token('a/', 60)}/{'a/' * 30_000}x": 400,
        # A 60 KB token over a real object: refused by its length before it is split.
        f"/origin/t/k1.{'9' * 60_000}.3.{'0' * 64}/{segment.key}": 403,
    }
    normal_url = signed(target, segment.key)
    with httpx.Client(base_url=target, timeout=10) as attacker, httpx.Client(timeout=10) as viewer:

        def normal() -> httpx.Response:
            response = viewer.get(normal_url)
            assert response.status_code == 200
            return response

        for path, status in hostile.items():
            assert len(path) > 60_000
            cost, response = cheap(partial(attacker.get, path), normal)
            refused(response, status)
            assert_cheap(cost)
    assert cache_files(stack.cache_dir) == files
    await assert_nothing_kept(res, before)


@pytest.mark.parametrize(
    "path",
    [
        "/origin/{key}?exp=9999999999&sig=%C3%A9",
        "/origin/{key}?exp={exp}&sig=%C3%A9",
        "/origin/{key}?exp={exp}&sig=v2.%C3%A9",
        "/origin/{key}?exp={exp}&sig=%FF%FE",
        "/origin/{key}?exp={exp}&sig=" + "%C3%A9" * 32,
        "/origin/{key}?exp=%D9%A1%D9%A2&sig=" + "0" * 64,  # digits, but not ASCII ones
        "/origin/t/k1.{exp}.3." + "%C3%A9" * 64 + "/{key}",
    ],
)
def test_a_non_ascii_signature_is_a_403_json_error(
    target: str, segment: Segment, path: str
) -> None:
    url = target + path.format(key=segment.key, exp=int(time.time()) + 60)
    refused(httpx.get(url), 403, error="forbidden")


async def test_dot_and_empty_components_are_400_and_nothing_is_cached(
    target: str, stack: Stack, segment: Segment, res: Resources
) -> None:
    prefix = segment.prefix
    keys = [
        f"{prefix}./360p/seg_00001.m4s",
        f"{prefix}../hls/360p/seg_00001.m4s",
        f"{prefix}360p//seg_00001.m4s",
        f"./{segment.key}",
        f"{segment.key}/",
        f"{prefix}360p/seg_00001.m4s/..",
    ]
    before, files = await Leftovers.take(res), cache_files(stack.cache_dir)
    token = signer_of().make_token(prefix, 60)
    for key in keys:
        # Validly signed as written, so that only the key check stands in the way.
        query = signer_of().sign(key, 60).query()
        for path in (f"/origin/{key}?{query}", f"/origin/t/{token}/{key}"):
            refused(raw_get(target, path), 400, error="bad_request", mentions="object key")
        encoded = key.replace(".", "%2E")
        refused(raw_get(target, f"/origin/{encoded}?{query}"), 400, error="bad_request")
    assert cache_files(stack.cache_dir) == files
    await assert_nothing_kept(res, before)


def test_an_expiry_beyond_the_longest_ttl_is_403_before_any_hmac(
    target: str, stack: Stack, segment: Segment
) -> None:
    settings = BaseServiceSettings()
    exp = int(time.time()) + settings.signing_max_ttl_seconds + CLOCK_SKEW_SECONDS + 3600
    depth = segment.prefix.count("/")
    # Each one a valid MAC: only the expiry bound refuses them.
    urls = [
        f"{target}/origin/{segment.key}?exp={exp}&sig=v2.{mac(query_message(segment.key, exp))}",
        f"{target}/origin/{segment.key}?exp={exp}&sig={mac(segment.key + str(exp))}",
        f"{target}/origin/t/k1.{exp}.{depth}.{mac(token_message(segment.prefix, exp))}/"
        + segment.key,
    ]
    served = origin_object_gets(stack.origin.url, "200")
    for url in urls:
        refused(httpx.get(url), 403, error="forbidden", mentions="too far ahead")
    assert origin_object_gets(stack.origin.url, "200") == served


def test_a_resplit_legacy_signature_opens_nothing(target: str) -> None:
    """The gateway's ``HMAC(path + exp)`` of ``.../part1`` is also one of ``.../part`` with
    ``1`` in front of ``exp``: a century-long signature for another object."""
    prefix = new_prefix()
    signed_key, wanted_key = prefix + "part1", prefix + "part"
    put_object(wanted_key, b"the object the attacker wants", "video/iso.segment")
    exp = int(time.time()) + 300
    legacy = gateway_signature(secret(), signed_key, exp)
    assert httpx.get(f"{target}/origin/{signed_key}?exp={exp}&sig={legacy}").status_code == 404
    resplit = f"{target}/origin/{wanted_key}?exp=1{exp}&sig={legacy}"
    refused(httpx.get(resplit), 403, error="forbidden")
    current = signer_of().sign(signed_key, 300)
    moved = f"{target}/origin/{wanted_key}?exp=1{current.exp}&sig={current.sig}&kid=k1"
    refused(httpx.get(moved), 403, error="forbidden")
    assert httpx.get(signed(target, wanted_key)).status_code == 200  # it is there


def test_the_edge_asks_the_origin_once_per_missing_object_and_ttl(stack: Stack) -> None:
    origin, edge = stack.origin.url, stack.edge.url
    key = new_prefix() + "360p/seg_00009.m4s"
    before = origin_object_gets(origin, "404")
    first = httpx.get(signed(edge, key))
    remembered_at = time.monotonic()
    refused(first, 404, error="not_found")
    assert first.headers["x-cache"] == "MISS"
    # Each with its own signature: the edge remembers the key, whatever credential names it.
    repeats = [httpx.get(signed(edge, key, ttl=300 + i)) for i in range(20)]
    if time.monotonic() - remembered_at < NEGATIVE_TTL_SECONDS:
        for response in repeats:
            refused(response, 404, error="not_found")
            assert response.headers["x-cache"] == "HIT"
        assert origin_object_gets(origin, "404") - before == 1
    data = os.urandom(10_000)
    put_object(key, data, "video/iso.segment")
    # Visible once the memory of the 404 has expired, and no later than a moment after that.
    served = wait_for(
        lambda: (r := httpx.get(signed(edge, key))).status_code == 200 and r,
        timeout=NEGATIVE_TTL_SECONDS + 10,
        interval=0.1,
        what="the uploaded object to be served by the edge",
    )
    assert time.monotonic() - remembered_at >= NEGATIVE_TTL_SECONDS * 0.9
    assert digest(served.content) == digest(data)


def assert_no_internals(response: httpx.Response, root: Path) -> None:
    assert response.headers.get("content-type", "").startswith("application/json"), response
    text = response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}, body
    for internal in (str(root), str(root.resolve()), "Traceback", 'File "', ".py", "/tmp/"):
        assert internal not in text, (internal, text)


def test_error_bodies_show_no_internals(target: str, segment: Segment, test_root: Path) -> None:
    prefix = segment.prefix
    put_object(prefix + "broken.m3u8", b"\xff\xfe#EXTM3U\n\xc3(\n", "application/vnd.apple.mpegurl")
    long_name = prefix + "n" * 300
    answers = {
        "missing object": (httpx.get(signed(target, prefix + "nope.m4s")), 404),
        "a folder, not an object": (httpx.get(signed(target, prefix.rstrip("/"))), 404),
        "a name longer than a file name": (httpx.get(signed(target, long_name)), 400),
        "dotted key": (raw_get(target, f"/origin/{prefix}../../etc/passwd"), 400),
        "forged signature": (httpx.get(signed(target, segment.key).replace("=v2.", "=v2.0")), 403),
        "range outside": (
            httpx.get(signed(target, segment.key), headers={"Range": "bytes=999999999-"}),
            416,
        ),
        "method": (httpx.post(signed(target, segment.key)), 405),
        "unknown route": (httpx.get(f"{target}/nothing/here"), 404),
        # A stored playlist that is not text fails unexpectedly: still nothing internal.
        "broken playlist": (httpx.get(signed(target, prefix + "broken.m3u8")), 0),
    }
    for case, (response, status) in answers.items():
        if status:
            assert response.status_code == status, (case, response.status_code, response.text)
        else:
            assert response.status_code in (500, 502), (case, response.status_code)
        assert_no_internals(response, test_root)


def test_the_player_loads_only_from_its_own_or_configured_servers(stack: Stack) -> None:
    origin = stack.origin.url
    evil = "http://evil.invalid"
    contacted: list[str] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.on("request", lambda request: contacted.append(request.url))
            page.goto(
                f"{origin}/player?video={uuid.uuid4()}&api={quote(evil + '/')}"
                f"&media={quote('//evil.invalid/')}"
            )
            page.wait_for_function("() => window.vspPlayer !== undefined", timeout=30_000)
            page.wait_for_function(
                "() => document.getElementById('catalog-status').textContent !== 'loading…'",
                timeout=30_000,
            )
            player = page.evaluate(
                "() => ({ignored: vspPlayer.ignored, api: vspPlayer.apiBase,"
                " media: vspPlayer.mediaBase})"
            )
        finally:
            browser.close()
    assert player == {"ignored": ["api", "media"], "api": "/", "media": "/"}, player
    assert contacted and all(url.startswith(origin) for url in contacted), contacted
