"""Playlist rewriting: every URI-bearing line signed, and signatures that outlive playback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.origin.playlists import children_ttl, sign_playlist
from services.origin.service import signed_playlist
from services.origin.settings import Settings
from shared.core.errors import Forbidden
from shared.core.signing import Signer
from shared.media import hls
from shared.runtime.resources import Resources
from shared.storage.filesystem import FilesystemStore
from tests.support.signing import query_of, signer_of

NOW = 1_700_000_000
SIGNER = Signer({"k1": "unit-test-secret-0123456789"}, "k1")

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="en",DEFAULT=YES,URI="audio/en/index.m3u8"
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="keys/session.key"
#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",AUDIO="aud"
360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=250000,RESOLUTION=320x180,CODECS="avc1.64000d,mp4a.40.2",AUDIO="aud"
180p/index.m3u8?lang=en
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI="360p/iframes.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=100000
https://elsewhere.example/abs/index.m3u8
"""

VARIANT = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:4
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-KEY:METHOD=AES-128,URI="../keys/k.key",IV=0x1
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.000000,
seg_00000.m4s
#EXTINF:4.000000,
seg_00001.m4s#t=1
#EXTINF:2.500000,
/absolute/seg_00002.m4s
#EXT-X-ENDLIST
"""


def uris(text: str) -> list[str]:
    return hls.referenced_uris(text)


def test_master_rewrite_signs_every_variant_media_and_iframe_uri() -> None:
    key = "videos/v/hls/master.m3u8"
    out = sign_playlist(MASTER, key, SIGNER, 600, now=NOW)
    signed = uris(out)
    assert len(signed) == len(uris(MASTER)) == 6
    relative = [u for u in signed if not hls.is_absolute(u)]
    assert len(relative) == 5
    for uri in relative:
        q = query_of(uri)
        path = hls.resolve(key, uri)
        assert path.startswith("videos/")
        assert SIGNER.verify(path, q["exp"], q["sig"], q["kid"], now=NOW) == NOW + 600
    assert 'URI="audio/en/index.m3u8?exp=' in out
    assert 'URI="360p/iframes.m3u8?exp=' in out
    assert 'URI="keys/session.key?exp=' in out
    # An existing query is kept and merged, not replaced.
    assert re.search(r"^180p/index\.m3u8\?lang=en&exp=\d+&sig=v2\.[0-9a-f]{64}&kid=k1$", out, re.M)
    # Absolute URIs point elsewhere and are left alone.
    assert "https://elsewhere.example/abs/index.m3u8\n" in out
    # Tags and attributes other than URIs are untouched.
    assert [x for x in out.splitlines() if x.startswith("#EXT-X-STREAM-INF")] == [
        x for x in MASTER.splitlines() if x.startswith("#EXT-X-STREAM-INF")
    ]


def test_variant_rewrite_signs_map_key_and_every_segment() -> None:
    key = "videos/v/hls/360p/index.m3u8"
    out = sign_playlist(VARIANT, key, SIGNER, 60, now=NOW)
    map_uri = re.search(r'#EXT-X-MAP:URI="([^"]+)"', out).group(1)  # type: ignore[union-attr]
    key_uri = re.search(r'#EXT-X-KEY:.*URI="([^"]+)"', out).group(1)  # type: ignore[union-attr]
    assert hls.resolve(key, map_uri) == "videos/v/hls/360p/init.mp4"
    assert hls.resolve(key, key_uri) == "videos/v/hls/keys/k.key"
    segments = [x for x in out.splitlines() if x and not x.startswith("#")]
    assert segments[0].startswith("seg_00000.m4s?exp=")
    assert re.fullmatch(r"seg_00001\.m4s\?exp=\d+&sig=v2\.[0-9a-f]{64}&kid=k1#t=1", segments[1])
    assert segments[2] == "/absolute/seg_00002.m4s"
    for uri in (map_uri, key_uri, segments[0], segments[1]):
        q = query_of(uri.split("#", 1)[0])
        SIGNER.verify(hls.resolve(key, uri), q["exp"], q["sig"], q["kid"], now=NOW)
    assert "#EXT-X-ENDLIST" in out and "#EXTINF:2.500000," in out


def test_resolve_and_append_query() -> None:
    assert hls.resolve("a/b/master.m3u8", "../c/x.m4s?q=1") == "a/c/x.m4s"
    assert hls.append_query("x.m4s", "exp=1") == "x.m4s?exp=1"
    assert hls.append_query("x.m4s?a=b#f", "exp=1") == "x.m4s?a=b&exp=1#f"


def test_children_outlive_the_media() -> None:
    assert children_ttl(60, 3600.4) == 60 + 3600 + 1


@pytest.fixture
async def long_video(tmp_path: Path) -> tuple[Resources, Settings, list[float]]:
    """A stored one-hour ladder (playlists only) and origin settings with a 60 s segment TTL."""
    store = FilesystemStore(tmp_path / "objects")
    durations = [4.0] * 899 + [2.0]
    variant = ["#EXTM3U", "#EXT-X-TARGETDURATION:4", '#EXT-X-MAP:URI="init.mp4"']
    for i, d in enumerate(durations):
        variant += [f"#EXTINF:{d:.3f},", f"seg_{i:05d}.m4s"]
    variant.append("#EXT-X-ENDLIST")
    await store.put_bytes("videos/v/hls/360p/index.m3u8", "\n".join(variant).encode())
    master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900000\n360p/index.m3u8\n"
    await store.put_bytes("videos/v/hls/master.m3u8", master.encode())
    settings = Settings(
        signing_secret="unit-test-secret-0123456789",
        origin_segment_ttl_seconds=60,
        origin_playlist_ttl_seconds=60,
    )
    return Resources(settings, store=store), settings, durations


async def test_an_hour_long_video_plays_to_its_end_on_a_simulated_clock(
    long_video: tuple[Resources, Settings, list[float]],
) -> None:
    """Segment signatures last 60 s, the video an hour: the last segment must still verify."""
    res, settings, durations = long_video
    signer = signer_of(settings)
    clock = float(NOW)
    master = await signed_playlist(res, settings, signer, "videos/v/hls/master.m3u8", now=clock)
    variant_uri = uris(master.decode())[0]
    clock += 2  # the player fetches the variant a moment later
    q = query_of(variant_uri)
    variant_key = hls.resolve("videos/v/hls/master.m3u8", variant_uri)
    signer.verify(variant_key, q["exp"], q["sig"], q["kid"], now=clock)
    variant = (await signed_playlist(res, settings, signer, variant_key, now=clock)).decode()
    segments = [u for u in uris(variant) if ".m4s" in u]
    assert len(segments) == len(durations)
    fetched = 0
    # Real-time playback with a rebuffering stall of a full segment TTL half-way through.
    for index, (uri, duration) in enumerate(zip(segments, durations, strict=True)):
        if index == len(segments) // 2:
            clock += settings.origin_segment_ttl_seconds
        q = query_of(uri)
        signer.verify(hls.resolve(variant_key, uri), q["exp"], q["sig"], q["kid"], now=clock)
        fetched += 1
        clock += duration
    assert fetched == 900
    assert clock - NOW > 3600 > settings.origin_segment_ttl_seconds
    # The gateway's original scheme (exp = fetch time + segment TTL) would have broken early.
    naive = signer.sign(hls.resolve(variant_key, segments[20]), 60, now=NOW + 2)
    with pytest.raises(Forbidden, match="expired"):
        signer.verify(hls.resolve(variant_key, segments[20]), naive.exp, naive.sig, now=NOW + 84)
