"""The streaming gateway's behaviours against the origin process: signed URLs, refresh, rewrites,
segment bytes, refusals, path tokens and key rotation."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from shared.core.settings import BaseServiceSettings
from shared.media import hls
from shared.runtime.resources import Resources
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.polling import wait_for
from tests.support.processes import Processes
from tests.support.signing import query_of, signer_of

SECRET = "test-signing-secret-0123456789"  # the session's SIGNING_SECRET (tests/conftest.py)


@pytest.fixture(scope="module")
def origin(test_env: dict[str, str], test_root: Path) -> Iterator[str]:
    manager = Processes(test_root / "logs" / "origin-gateway", test_env)
    try:
        yield manager.service("origin").url
    finally:
        manager.stop_all()


@pytest.fixture(scope="module")
async def video(res: Resources, media_dir: Path) -> AsyncIterator[SeededVideo]:
    yield await seed_video(res, make_ladder(media_dir, seconds=8), title="gateway", seconds=8)


def gateway_sig(path: str, exp: int, secret: str = SECRET) -> str:
    """The gateway's (legacy) formula, written out independently of shared.core.signing."""
    return hmac.new(secret.encode(), (path + str(exp)).encode(), hashlib.sha256).hexdigest()


def v2_sig(path: str, exp: int, secret: str = SECRET) -> str:
    """The platform's version 2 signature, written out independently of shared.core.signing."""
    message = f"v2\n{path}\n{exp}".encode()
    return "v2." + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def assert_signed(url: str, path: str) -> int:
    query = query_of(url)
    exp = int(query["exp"])
    assert query["sig"] == v2_sig(path, exp), url
    return exp


def test_stream_urls_have_the_gateway_shape(origin: str, video: SeededVideo) -> None:
    before = int(time.time())
    body = httpx.get(f"{origin}/api/stream/{video.id}").json()
    assert set(body) >= {"master_url", "variants", "expires_in"}
    pattern = (
        rf"^{re.escape(origin)}/origin/{video.master_key}\?exp=(\d+)&sig=v2\.[0-9a-f]{{64}}&kid=k1$"
    )
    match = re.match(pattern, body["master_url"])
    assert match, body["master_url"]
    exp = assert_signed(body["master_url"], video.master_key)
    # Signatures last the playlist TTL plus the whole video, so playback outlives them never.
    assert body["expires_in"] >= 300 + 8
    assert before + body["expires_in"] <= exp <= int(time.time()) + body["expires_in"] + 1
    assert [v["bitrate"] for v in body["variants"]] == sorted(
        (v["bitrate"] for v in body["variants"]), reverse=True
    )
    assert len(body["variants"]) == 2
    for variant in body["variants"]:
        path = urlsplit(variant["url"]).path.removeprefix("/origin/")
        assert path.startswith(video.prefix) and path.endswith("/index.m3u8")
        assert_signed(variant["url"], path)
        assert httpx.get(variant["url"]).status_code == 200


def test_refresh_gives_new_valid_urls(origin: str, video: SeededVideo) -> None:
    first = httpx.get(f"{origin}/api/stream/{video.id}").json()
    time.sleep(1.1)
    refreshed = httpx.post(f"{origin}/api/stream/refresh", json={"video_id": str(video.id)})
    assert refreshed.status_code == 200
    second = refreshed.json()
    assert int(query_of(second["master_url"])["exp"]) > int(query_of(first["master_url"])["exp"])
    assert query_of(second["master_url"])["sig"] != query_of(first["master_url"])["sig"]
    for url in [second["master_url"], *(v["url"] for v in second["variants"])]:
        assert httpx.get(url).status_code == 200
    bad = httpx.post(f"{origin}/api/stream/refresh", json={"video_id": "nope"})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"


def test_master_rewrite_signs_every_variant(origin: str, video: SeededVideo) -> None:
    master_url = httpx.get(f"{origin}/api/stream/{video.id}").json()["master_url"]
    response = httpx.get(master_url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apple.mpegurl"
    stored = video.files[video.master_key].read_text()
    served = response.text
    stored_uris = hls.referenced_uris(stored)
    served_uris = hls.referenced_uris(served)
    assert len(served_uris) == len(stored_uris) == 2
    for original, signed in zip(stored_uris, served_uris, strict=True):
        assert signed.startswith(original + "?exp=")
        assert_signed(signed, hls.resolve(video.master_key, original))
        assert httpx.get(urljoin(master_url, signed)).status_code == 200
    # Everything but the URIs is untouched.
    assert [line for line in served.splitlines() if line.startswith("#")] == [
        line for line in stored.splitlines() if line.startswith("#")
    ]


def test_variant_rewrite_signs_map_and_every_segment(origin: str, video: SeededVideo) -> None:
    variant_url = httpx.get(f"{origin}/api/stream/{video.id}").json()["variants"][0]["url"]
    variant_key = urlsplit(variant_url).path.removeprefix("/origin/")
    served = httpx.get(variant_url).text
    stored = video.files[variant_key].read_text()
    map_lines = [line for line in served.splitlines() if line.startswith("#EXT-X-MAP")]
    assert len(map_lines) == 1
    map_uri = re.search(r'URI="([^"]+)"', map_lines[0]).group(1)  # type: ignore[union-attr]
    assert_signed(map_uri, hls.resolve(variant_key, map_uri))
    segments = [line for line in served.splitlines() if line and not line.startswith("#")]
    stored_segments = [line for line in stored.splitlines() if line and not line.startswith("#")]
    assert len(segments) == len(stored_segments) == 4
    for uri in segments:
        assert_signed(uri, hls.resolve(variant_key, uri))


def test_segment_bytes_equal_the_stored_bytes(origin: str, video: SeededVideo) -> None:
    variant_url = httpx.get(f"{origin}/api/stream/{video.id}").json()["variants"][-1]["url"]
    variant_key = urlsplit(variant_url).path.removeprefix("/origin/")
    served = httpx.get(variant_url).text
    checked = 0
    with httpx.Client() as client:
        for uri in hls.referenced_uris(served):
            key = hls.resolve(variant_key, uri)
            response = client.get(urljoin(variant_url, uri))
            assert response.status_code == 200
            assert response.content == video.files[key].read_bytes()
            checked += 1
    assert checked == 5  # init + 4 segments


def test_refusals_are_403_with_a_json_error(origin: str, video: SeededVideo) -> None:
    signer = signer_of(BaseServiceSettings())
    base = f"{origin}/origin"
    segment = video.key("360p/seg_00001.m4s")
    good = signer.signed_url(base, segment, 60)
    q = query_of(good)
    cases = {
        "missing": f"{base}/{segment}",
        "tampered": f"{base}/{segment}?exp={q['exp']}&sig={'0' * 64}",
        "other object": f"{base}/{video.key('360p/seg_00002.m4s')}?exp={q['exp']}&sig={q['sig']}",
        "expired": signer.signed_url(base, segment, -5),
        "unknown key id": f"{base}/{segment}?exp={q['exp']}&sig={q['sig']}&kid=zz",
        "bad exp": f"{base}/{segment}?exp=soon&sig={q['sig']}",
    }
    for case, url in cases.items():
        response = httpx.get(url)
        assert response.status_code == 403, case
        body = response.json()
        assert body["error"] == "forbidden" and body["detail"], case
    # Without a key id every accepted key is tried, as URLs signed by the gateway had none.
    no_kid = f"{base}/{segment}?exp={q['exp']}&sig={q['sig']}"
    assert httpx.get(no_kid).status_code == 200
    # The gateway's own (unversioned) signatures still verify within the expiry bound.
    legacy = f"{base}/{segment}?exp={q['exp']}&sig={gateway_sig(segment, int(q['exp']))}"
    assert httpx.get(legacy).status_code == 200
    assert httpx.get(good).status_code == 200
    missing = httpx.get(signer.signed_url(base, video.key("360p/nope.m4s"), 60))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong_method = httpx.post(good)
    assert wrong_method.status_code == 405


def test_stream_api_errors(origin: str) -> None:
    unknown = httpx.get(f"{origin}/api/stream/00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    # Any string the gateway took as a track id is looked up (404 when it names no video).
    not_uuid = httpx.get(f"{origin}/api/stream/not-a-uuid")
    assert not_uuid.status_code == 404 and not_uuid.json()["error"] == "not_found"
    malformed = httpx.get(f"{origin}/api/stream/not a uuid")
    assert malformed.status_code == 422
    bad_mode = httpx.get(f"{origin}/api/stream/00000000-0000-0000-0000-000000000000?mode=x")
    assert bad_mode.status_code == 422 and bad_mode.json()["error"] == "validation_error"


def test_token_mode_covers_the_video_prefix(origin: str, video: SeededVideo) -> None:
    before = int(time.time())
    body = httpx.get(f"{origin}/api/stream/{video.id}", params={"mode": "token"}).json()
    assert body["mode"] == "token"
    master_url = body["master_url"]
    match = re.match(rf"^{re.escape(origin)}/origin/t/([^/]+)/{video.master_key}$", master_url)
    assert match, master_url
    token = match.group(1)
    kid, exp, depth, sig = token.split(".")
    # Issued for the playlist TTL plus the whole video, counted from when it was asked for.
    assert kid == "k1" and body["expires_in"] >= 300 + 8
    assert before + body["expires_in"] <= int(exp) <= int(time.time()) + body["expires_in"]
    covered = f"{video.prefix}hls/"  # the master's folder, not the whole video folder
    assert depth == "3"
    expected = hmac.new(SECRET.encode(), f"v2\nt\n{covered}\n{exp}".encode(), hashlib.sha256)
    assert sig == expected.hexdigest()
    source = master_url.replace("hls/master.m3u8", "source")
    assert httpx.get(source).status_code == 403  # the uploaded original stays private
    # Playlists come back as stored: relative child URIs inherit the token from the path.
    master = httpx.get(master_url, headers={"Accept-Encoding": "identity"})
    assert master.status_code == 200
    assert master.text == video.files[video.master_key].read_text()
    assert master.headers["cache-control"].startswith("public")
    with httpx.Client() as client:
        for variant_uri in hls.referenced_uris(master.text):
            variant_url = urljoin(master_url, variant_uri)
            assert f"/t/{token}/" in variant_url
            variant = client.get(variant_url)
            assert variant.status_code == 200
            for uri in hls.referenced_uris(variant.text):
                segment = client.get(urljoin(variant_url, uri))
                key = urlsplit(str(segment.url)).path.split(f"/t/{token}/", 1)[1]
                assert segment.status_code == 200
                assert segment.content == video.files[key].read_bytes()
                assert "immutable" in segment.headers["cache-control"]
    # The token opens this video's folder only, and only unaltered.
    other = master_url.replace(str(video.id), "00000000-0000-0000-0000-000000000000")
    assert httpx.get(other).status_code == 403
    tampered = master_url.replace(sig, "f" * 64)
    assert httpx.get(tampered).json()["error"] == "forbidden"
    escape = master_url.replace("hls/master.m3u8", "hls/../../other/master.m3u8")
    assert httpx.get(escape).status_code in (400, 403, 404)


def test_key_rotation_accepts_old_and_new_keys(
    test_env: dict[str, str], test_root: Path, video: SeededVideo
) -> None:
    """During a rotation the origin signs with the new key and still accepts the old one.

    That a retired key is refused is covered in tests/unit/test_signing.py.
    """
    manager = Processes(test_root / "logs" / "origin-rotation", test_env)
    new_secret = "rotated-secret-abcdefghijklmnop"
    try:
        during = manager.service(
            "origin",
            env={
                "SIGNING_KEY_ID": "k2",
                "SIGNING_SECRET": new_secret,
                "SIGNING_PREVIOUS_KEYS": f'{{"k1": "{SECRET}"}}',
            },
        ).url
        old = signer_of(BaseServiceSettings())
        segment = video.key("180p/seg_00000.m4s")
        old_url = old.signed_url(f"{during}/origin", segment, 60)
        assert httpx.get(old_url).status_code == 200
        legacy = old_url.replace("&kid=k1", "")
        assert httpx.get(legacy).status_code == 200
        fresh = httpx.get(f"{during}/api/stream/{video.id}").json()["master_url"]
        assert query_of(fresh)["kid"] == "k2"
        exp = int(query_of(fresh)["exp"])
        assert query_of(fresh)["sig"] == v2_sig(video.master_key, exp, new_secret)
        assert httpx.get(fresh).status_code == 200
        forged = old_url.replace("kid=k1", "kid=k2")
        assert httpx.get(forged).status_code == 403
    finally:
        manager.stop_all()


# HTTP semantics, checked with curl.


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl; the final response's status, lower-cased headers and body."""
    done = subprocess.run(
        ["curl", "-s", "-D", "-", "-o", "-", "--max-time", "20", *args],
        capture_output=True,
        check=True,
    )
    raw = done.stdout
    # Skip interim responses; headers end at the first blank line of the last block.
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.fixture(scope="module")
def segment(origin: str, video: SeededVideo) -> tuple[str, bytes]:
    """A signed segment URL and the stored bytes it must serve."""
    key = video.key("360p/seg_00001.m4s")
    url = signer_of(BaseServiceSettings()).signed_url(f"{origin}/origin", key, 600)
    return url, video.files[key].read_bytes()


def test_range_single_and_suffix(segment: tuple[str, bytes]) -> None:
    url, data = segment
    size = len(data)
    status, headers, body = curl("-r", "100-1099", url)
    assert status == 206
    assert headers["content-range"] == f"bytes 100-1099/{size}"
    assert headers["content-length"] == "1000" and body == data[100:1100]
    status, headers, body = curl("-H", "Range: bytes=-500", url)
    assert status == 206 and body == data[-500:]
    assert headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
    status, headers, body = curl("-H", f"Range: bytes={size - 10}-", url)
    assert status == 206 and body == data[-10:]
    status, headers, body = curl("-H", f"Range: bytes=0-{size * 2}", url)  # clamped to the end
    assert status == 206 and body == data
    status, headers, body = curl(url)
    assert status == 200 and body == data and headers["accept-ranges"] == "bytes"


def test_unsatisfiable_range_is_416_with_content_range(segment: tuple[str, bytes]) -> None:
    url, data = segment
    for spec in (f"bytes={len(data)}-", f"bytes={len(data) + 5}-{len(data) + 9}", "bytes=-0"):
        status, headers, body = curl("-H", f"Range: {spec}", url)
        assert status == 416, spec
        assert headers["content-range"] == f"bytes */{len(data)}"
        assert json.loads(body)["error"] == "range_not_satisfiable"


def test_conditional_requests_304(segment: tuple[str, bytes]) -> None:
    url, data = segment
    status, headers, _ = curl(url)
    etag, last_modified = headers["etag"], headers["last-modified"]
    assert status == 200 and etag.startswith('"')
    status, again, body = curl("-H", f"If-None-Match: {etag}", url)
    assert status == 304 and body == b"" and again["etag"] == etag
    status, _, body = curl("-H", f"If-Modified-Since: {last_modified}", url)
    assert status == 304 and body == b""
    status, _, body = curl("-H", 'If-None-Match: "other"', url)
    assert status == 200 and body == data
    # If-Range: a stale validator turns the range request into a full 200.
    status, _, body = curl("-r", "0-9", "-H", 'If-Range: "stale"', url)
    assert status == 200 and body == data
    status, _, body = curl("-r", "0-9", "-H", f"If-Range: {etag}", url)
    assert status == 206 and body == data[:10]


def test_head_has_headers_and_no_body(segment: tuple[str, bytes]) -> None:
    url, data = segment
    status, headers, body = curl("-I", url)
    assert status == 200 and body.strip() == b""  # curl -I may echo a blank line
    assert headers["content-length"] == str(len(data))
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))
    assert headers["content-type"] == "video/iso.segment"
    assert headers["etag"] and headers["last-modified"]
    status, headers, body = curl("-I", "-r", "0-99", url)
    assert status == 206 and headers["content-length"] == "100" and body.strip() == b""


def test_cache_control_and_content_types(origin: str, video: SeededVideo) -> None:
    signer = signer_of(BaseServiceSettings())
    expected = {
        "360p/seg_00000.m4s": "video/iso.segment",
        "360p/init_0.mp4": "video/mp4",
        "poster.jpg": "image/jpeg",
    }
    for relative, content_type in expected.items():
        status, headers, _ = curl(
            "-I", signer.signed_url(f"{origin}/origin", video.key(relative), 60)
        )
        assert status == 200, relative
        assert headers["content-type"] == content_type
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
    playlist = signer.signed_url(f"{origin}/origin", video.master_key, 60)
    status, headers, _ = curl(playlist)
    assert status == 200
    assert headers["content-type"] == "application/vnd.apple.mpegurl"
    assert headers["cache-control"] == "private, max-age=5"


def test_playlists_are_gzipped_for_clients_that_accept_it(origin: str, video: SeededVideo) -> None:
    variant = signer_of(BaseServiceSettings()).signed_url(
        f"{origin}/origin", video.key("360p/index.m3u8"), 60
    )
    status, headers, body = curl("-H", "Accept-Encoding: gzip", variant)
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in headers["vary"]
    text = gzip.decompress(body).decode()
    assert text.startswith("#EXTM3U") and text.count("sig=") == 5
    assert int(headers["content-length"]) == len(body) < len(text.encode())
    status, headers, body = curl(variant)
    assert status == 200 and "content-encoding" not in headers and body.startswith(b"#EXTM3U")


def test_cors_for_players_on_other_sites(segment: tuple[str, bytes]) -> None:
    url, _ = segment
    status, headers, _ = curl(
        "-X", "OPTIONS", url,
        "-H", "Origin: https://player.example",
        "-H", "Access-Control-Request-Method: GET",
        "-H", "Access-Control-Request-Headers: range",
    )  # fmt: skip
    assert status == 204
    assert headers["access-control-allow-origin"] in ("*", "https://player.example")
    assert "range" in headers["access-control-allow-headers"].lower()
    assert "GET" in headers["access-control-allow-methods"]
    status, headers, _ = curl("-r", "0-9", "-H", "Origin: https://player.example", url)
    assert status == 206 and headers["access-control-allow-origin"] == "*"
    exposed = headers["access-control-expose-headers"].lower()
    assert "content-range" in exposed and "content-length" in exposed


def metric(origin: str, name: str, route: str) -> float:
    for line in httpx.get(f"{origin}/metrics").text.splitlines():
        if line.startswith(name + "{") and f'route="{route}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def response_bytes(origin: str, route: str) -> float:
    """The route's byte counter once no response of the route is still being finished.

    A client has the whole body before the server has finished the request: the counter moves
    when the response ends, just after the last bytes went out, and the in-progress gauge drops
    in the same step.
    """
    wait_for(
        lambda: metric(origin, "http_requests_in_progress", route) == 0,
        timeout=15,
        what=f"the responses of {route} to end",
    )
    return metric(origin, "http_response_bytes_total", route)


def test_bytes_sent_by_path_are_counted(origin: str, segment: tuple[str, bytes]) -> None:
    url, data = segment
    before = response_bytes(origin, "/origin/{path}")
    assert httpx.get(url).content == data
    assert response_bytes(origin, "/origin/{path}") - before == len(data)
