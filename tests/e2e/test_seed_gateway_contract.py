"""The streaming gateway's contract, as its README states it, against a real origin process.

The origin grew from that gateway: a client written for it keeps working. Stream API (master and
variant URLs, ``artist_id``, ``available_bitrates``), refresh with the gateway's body, signed
object delivery with playlists rewritten, its 403/404 answers, ``/health``, the ``STREAMING_``
settings, ``CDN_BASE_URL`` and the TTL bounds (playlists 60..3600 s, segments 10..600 s).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from shared.core.signing import gateway_signature
from shared.media import hls
from shared.runtime.resources import Resources
from tests.support.accounts import Account, create_account
from tests.support.hls import variant_streams
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import VSP, Processes
from tests.support.security import refused
from tests.support.signing import query_of, signer_of

PLAYLIST_TTL_SECONDS = 300
SEGMENT_TTL_SECONDS = 60
VIDEO_SECONDS = 4
CDN = "http://cdn.example.test:8088"
# Outside the test suite's environment, where the gateway's TTL bounds hold.
BOUNDED = {"ENVIRONMENT": "local"}


@dataclass(frozen=True)
class Gateway:
    url: str
    cdn_origin: str


@pytest.fixture(scope="module")
def gateway(test_env: dict[str, str], test_root: Path) -> Iterator[Gateway]:
    """An origin configured only by the gateway's setting names, and one behind a CDN."""
    manager = Processes(test_root / "logs" / "seed-gateway", test_env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **BOUNDED,
        "STREAMING_BASE_URL": base,
        "STREAMING_PLAYLIST_TTL_SECONDS": str(PLAYLIST_TTL_SECONDS),
        "STREAMING_SEGMENT_TTL_SECONDS": str(SEGMENT_TTL_SECONDS),
    }
    try:
        manager.service("origin", env=env, port=port)
        behind_cdn = manager.service("origin", env={**env, "CDN_BASE_URL": CDN})
        yield Gateway(base, behind_cdn.url or "")
    finally:
        manager.stop_all()


@pytest.fixture(scope="module")
def ladder(media_dir: Path) -> Path:
    return make_ladder(media_dir, seconds=VIDEO_SECONDS)


@pytest.fixture
async def track(res: Resources, ladder: Path, account: Account) -> SeededVideo:
    """A ready video of ``account``'s channel: the gateway's track of artist ``account.name``."""
    return await seed_video(
        res, ladder, title="track", seconds=VIDEO_SECONDS, owner_id=account.user_id
    )


def bitrates_of(ladder: Path) -> list[int]:
    master = ladder.joinpath("master.m3u8").read_text()
    return [int(attrs["BANDWIDTH"]) for attrs, _ in variant_streams(master)]


def assert_signed(url: str, base: str) -> None:
    """A gateway URL: under ``{base}/origin/``, with ``exp`` in the future and a ``sig``."""
    assert url.startswith(f"{base}/origin/"), url
    query = query_of(url)
    assert int(query["exp"]) > time.time() and query["sig"], url


def assert_stream_shape(body: dict[str, object], base: str, bitrates: list[int]) -> None:
    assert_signed(str(body["master_url"]), base)
    variants = body["variants"]
    assert isinstance(variants, list)
    assert [v["bitrate"] for v in variants] == bitrates
    for variant in variants:
        assert_signed(variant["url"], base)
        assert urlsplit(variant["url"]).path.endswith("/index.m3u8")
    # The gateway's playlist TTL, lengthened by the video so playback never outlives it.
    expires_in = body["expires_in"]
    assert isinstance(expires_in, int)
    assert PLAYLIST_TTL_SECONDS <= expires_in <= PLAYLIST_TTL_SECONDS + VIDEO_SECONDS + 1


def test_health_answers_the_gateways_json(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "service": "Streaming Gateway",
        "version": "0.1.0",
    }


def test_stream_api_signs_master_and_variants_of_the_artists_track(
    gateway: Gateway, track: SeededVideo, account: Account, ladder: Path
) -> None:
    url = f"{gateway.url}/api/stream/{track.id}"
    response = httpx.get(url, params={"artist_id": account.name})
    assert response.status_code == 200, response.text
    assert_stream_shape(response.json(), gateway.url, bitrates_of(ladder))
    # Another artist's id, an unknown track, and the string ids the gateway took: 404 as JSON.
    refused(httpx.get(url, params={"artist_id": f"not-{account.name}"}), 404, error="not_found")
    refused(httpx.get(f"{gateway.url}/api/stream/{uuid.uuid4()}"), 404, error="not_found")
    refused(httpx.get(f"{gateway.url}/api/stream/1", params={"artist_id": "1"}), 404)


def test_string_track_ids_map_to_videos(
    gateway: Gateway, track: SeededVideo, account: Account, test_env: dict[str, str]
) -> None:
    """The gateway's string ids ("1"): the owner sets the video's track id, clients use it."""
    track_id = f"t{uuid.uuid4().hex[:12]}"
    video_url = f"{gateway.url}/api/videos/{track.id}"
    refused(httpx.get(f"{gateway.url}/api/stream/{track_id}"), 404, error="not_found")
    edit = {"track_id": track_id}
    stranger = create_account(test_env)  # another uploader may not set it
    refused(httpx.patch(video_url, json=edit, headers=stranger.headers), 403)
    edited = httpx.patch(video_url, json=edit, headers=account.headers)
    assert edited.status_code == 200, edited.text
    assert edited.json()["track_id"] == track_id

    by_track = httpx.get(f"{gateway.url}/api/stream/{track_id}", params={"artist_id": account.name})
    assert by_track.status_code == 200, by_track.text
    by_id = httpx.get(f"{gateway.url}/api/stream/{track.id}").json()
    assert by_track.json()["master_url"].split("?")[0] == by_id["master_url"].split("?")[0]
    refreshed = httpx.post(
        f"{gateway.url}/api/stream/refresh", json={"track_id": track_id, "artist_id": account.name}
    )
    assert refreshed.status_code == 200, refreshed.text
    refused(
        httpx.get(f"{gateway.url}/api/stream/{track_id}", params={"artist_id": "someone-else"}),
        404,
    )
    # Ids that could not be a track id are refused before any lookup.
    spaced = httpx.patch(video_url, json={"track_id": "a b"}, headers=account.headers)
    assert spaced.status_code == 422
    assert httpx.get(f"{gateway.url}/api/stream/{'x' * 65}").status_code == 422


async def test_a_track_id_names_one_video(
    gateway: Gateway, res: Resources, ladder: Path, track: SeededVideo, account: Account
) -> None:
    second = await seed_video(
        res, ladder, title="second", seconds=VIDEO_SECONDS, owner_id=account.user_id
    )
    track_id = f"t{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(headers=account.headers) as client:
        first = await client.patch(
            f"{gateway.url}/api/videos/{track.id}", json={"track_id": track_id}
        )
        assert first.status_code == 200, first.text
        taken = await client.patch(
            f"{gateway.url}/api/videos/{second.id}", json={"track_id": track_id}
        )
        refused(taken, 409, error="conflict", mentions=track_id)


def test_available_bitrates_chooses_the_variants_listed_and_signed(
    gateway: Gateway, track: SeededVideo, account: Account, ladder: Path
) -> None:
    high, low = sorted(bitrates_of(ladder), reverse=True)

    def stream(bitrates: str) -> httpx.Response:
        params = {"artist_id": account.name, "available_bitrates": bitrates}
        return httpx.get(f"{gateway.url}/api/stream/{track.id}", params=params)

    only_low = stream(str(low))
    assert only_low.status_code == 200, only_low.text
    assert_stream_shape(only_low.json(), gateway.url, [low])
    # Bitrates the track does not have are skipped; the order is the ladder's.
    both = stream(f"{low},96000,{high}")
    assert_stream_shape(both.json(), gateway.url, [high, low])
    body = refused(stream("256000,160000,96000"), 404, mentions="bitrates")
    assert sorted(body["available_bitrates"]) == [low, high]
    refused(stream("256k"), 400, mentions="bitrates")


def test_refresh_takes_the_gateways_body_and_todays(
    gateway: Gateway, track: SeededVideo, account: Account, ladder: Path
) -> None:
    refresh = f"{gateway.url}/api/stream/refresh"
    high, low = sorted(bitrates_of(ladder), reverse=True)
    seed_body = {"track_id": str(track.id), "artist_id": account.name, "available_bitrates": [high]}
    response = httpx.post(refresh, json=seed_body)
    assert response.status_code == 200, response.text
    assert_stream_shape(response.json(), gateway.url, [high])
    without_bitrates = httpx.post(
        refresh, json={"track_id": str(track.id), "artist_id": account.name}
    )
    assert_stream_shape(without_bitrates.json(), gateway.url, [high, low])
    todays = httpx.post(refresh, json={"video_id": str(track.id)})
    assert_stream_shape(todays.json(), gateway.url, [high, low])

    refused(httpx.post(refresh, json={**seed_body, "artist_id": "someone-else"}), 404)
    refused(httpx.post(refresh, json={"track_id": "1", "artist_id": "1"}), 404)
    assert httpx.post(refresh, json={"artist_id": account.name}).status_code == 422


def test_origin_rewrites_playlists_with_fresh_signatures_and_serves_segments(
    gateway: Gateway, track: SeededVideo, account: Account
) -> None:
    stream = httpx.get(f"{gateway.url}/api/stream/{track.id}", params={"artist_id": account.name})
    master_url = stream.json()["master_url"]
    master = httpx.get(master_url)
    assert master.status_code == 200
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    stored_master = track.files[track.master_key].read_text()
    # Every relative variant path is kept, with exp and sig appended.
    uris = hls.referenced_uris(master.text)
    assert [u.split("?", 1)[0] for u in uris] == hls.referenced_uris(stored_master)
    for uri in uris:
        assert set(query_of(uri)) >= {"exp", "sig"}, uri

    variant_url = urljoin(master_url, uris[0])
    variant = httpx.get(variant_url)
    assert variant.status_code == 200
    children = hls.referenced_uris(variant.text)
    assert children[0].split("?", 1)[0].endswith(".mp4")  # the fMP4 init segment (EXT-X-MAP)
    assert all(child.split("?", 1)[0].endswith(".m4s") for child in children[1:])
    now = time.time()
    for child in children:
        exp = int(query_of(child)["exp"])
        # Segment signatures: the gateway's segment TTL on top of the track's length.
        assert now + SEGMENT_TTL_SECONDS - 5 <= exp <= now + SEGMENT_TTL_SECONDS + VIDEO_SECONDS + 2
    for child in (children[0], children[-1]):
        response = httpx.get(urljoin(variant_url, child))
        assert response.status_code == 200
        key = hls.resolve(urlsplit(variant_url).path.removeprefix("/origin/"), child)
        assert response.content == track.files[key].read_bytes()


def test_origin_answers_403_for_bad_signatures_and_404_for_missing_objects(
    gateway: Gateway, track: SeededVideo, test_env: dict[str, str]
) -> None:
    signer = signer_of()
    key = track.master_key
    plain = f"{gateway.url}/origin/{key}"
    refused(httpx.get(plain), 403)
    good = query_of(signer.signed_url(f"{gateway.url}/origin", key, 60))
    refused(httpx.get(plain, params={"exp": good["exp"]}), 403)
    refused(httpx.get(plain, params={**good, "sig": good["sig"][:-4] + "0000"}), 403)
    other = query_of(signer.signed_url(f"{gateway.url}/origin", track.key("other.m3u8"), 60))
    refused(httpx.get(plain, params=other), 403)
    expired = signer.sign(key, 60, now=time.time() - 3600)
    refused(httpx.get(f"{plain}?{expired.query()}"), 403)
    assert httpx.get(f"{plain}?{signer.sign(key, 60).query()}").status_code == 200
    # A URL signed the gateway's own way: HMAC-SHA256(secret, path + exp), unversioned.
    exp = int(time.time()) + 60
    by_gateway = {"exp": str(exp), "sig": gateway_signature(test_env["SIGNING_SECRET"], key, exp)}
    assert httpx.get(plain, params=by_gateway).status_code == 200
    refused(httpx.get(plain, params={**by_gateway, "exp": str(exp + 1)}), 403)

    missing = track.key("360p/chunk_999.m4s")
    refused(httpx.get(signer.signed_url(f"{gateway.url}/origin", missing, 60)), 404)


def test_cdn_base_url_points_every_url_at_the_cdn(
    gateway: Gateway, track: SeededVideo, account: Account
) -> None:
    origin = gateway.cdn_origin
    stream = httpx.get(f"{origin}/api/stream/{track.id}", params={"artist_id": account.name})
    body = stream.json()
    assert_signed(body["master_url"], CDN)
    for variant in body["variants"]:
        assert_signed(variant["url"], CDN)
    seed_body = {"track_id": str(track.id), "artist_id": account.name}
    refreshed = httpx.post(f"{origin}/api/stream/refresh", json=seed_body)
    assert refreshed.json()["master_url"].startswith(f"{CDN}/origin/")
    poster = httpx.get(f"{origin}/api/videos/{track.id}").json()["poster_url"]
    assert poster.startswith(f"{CDN}/origin/")
    # Playlists keep relative URIs, so fetched through the CDN every child stays on the CDN.
    master_path = urlsplit(body["master_url"])
    master = httpx.get(f"{origin}{master_path.path}?{master_path.query}")
    assert master.status_code == 200
    assert not any(hls.is_absolute(uri) for uri in hls.referenced_uris(master.text))


@pytest.mark.parametrize(
    ("setting", "value", "named", "bound"),
    [
        ("STREAMING_PLAYLIST_TTL_SECONDS", "59", "ORIGIN_PLAYLIST_TTL_SECONDS", "60"),
        ("STREAMING_PLAYLIST_TTL_SECONDS", "3601", "ORIGIN_PLAYLIST_TTL_SECONDS", "3600"),
        ("STREAMING_SEGMENT_TTL_SECONDS", "9", "ORIGIN_SEGMENT_TTL_SECONDS", "10"),
        ("ORIGIN_SEGMENT_TTL_SECONDS", "601", "ORIGIN_SEGMENT_TTL_SECONDS", "600"),
    ],
)
def test_a_ttl_out_of_the_gateways_bounds_refuses_to_start(
    test_env: dict[str, str], setting: str, value: str, named: str, bound: str
) -> None:
    done = subprocess.run(
        [*VSP, "serve", "origin", "--port", str(free_port())],
        cwd=ROOT,
        env={**test_env, **BOUNDED, setting: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert named in done.stderr and bound in done.stderr, done.stderr[-2000:]
