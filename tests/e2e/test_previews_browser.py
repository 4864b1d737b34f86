"""Scrubbing previews and trick play through a running origin: signed thumbnails track and
sprites in both URL styles, the I-frame playlist decoded by ffmpeg from its signed URL with
Range requests, and the player's seek bar showing the tile of the hovered time in Chromium.

The screenshot of the hovered seek bar is saved to ``results/screenshots/seek-preview.png``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from services.transcoder import service
from services.transcoder.settings import Settings
from shared.media.samples import synthetic_clip as make_clip
from shared.runtime.resources import Resources
from tests.support.browser import chromium
from tests.support.edge import start_edge
from tests.support.hls import attributes, decode_frames, variant_streams, video_packets
from tests.support.paths import ROOT
from tests.support.processes import Processes
from tests.support.transcode import queued_video, video_row

SCREENSHOT = Path(ROOT) / "results" / "screenshots" / "seek-preview.png"
# A 12 s clip with a keyframe every 2 s.
KEYFRAMES = 6
CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$", re.M)


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> str:
    return module_procs.service("origin").url


@pytest.fixture(scope="module")
async def video_id(
    res: Resources, test_env: dict[str, str], media_dir: Path
) -> AsyncIterator[uuid.UUID]:
    """A public video transcoded by the transcoder's own use case (previews included)."""
    clip = make_clip(media_dir / "previews-browser.mp4", seconds=12, size="640x360", rate=25)
    job = await queued_video(res, clip)
    await service.transcode(res, Settings(), job)
    video = await video_row(res, job.video_id)
    assert video.state == "ready", video.error
    yield job.video_id


def cues(vtt: str) -> list[tuple[float, float, str]]:
    lines = vtt.splitlines()
    found = []
    for i, line in enumerate(lines):
        if match := CUE.match(line):
            g = [int(x) for x in match.groups()]
            start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
            end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
            found.append((start, end, lines[i + 1]))
    return found


@pytest.mark.parametrize("mode", ["query", "token"])
def test_thumbnails_and_sprites_are_signed(origin: str, video_id: uuid.UUID, mode: str) -> None:
    stream = httpx.get(f"{origin}/api/stream/{video_id}", params={"mode": mode}).json()
    url = stream["thumbnails_url"]
    assert url and "/thumbnails.vtt" in url
    vtt = httpx.get(url)
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    track = cues(vtt.text)
    assert track and track[0][0] == 0 and track[-1][1] == pytest.approx(12, abs=0.1)
    payload = track[0][2]
    if mode == "query":
        assert re.fullmatch(r"sprites-0\.jpg\?exp=\d+&sig=[^#]+#xywh=0,0,160,90", payload)
    else:
        assert payload == "sprites-0.jpg#xywh=0,0,160,90"  # the token in the path covers it
    sheet = httpx.get(urljoin(url, payload.split("#", 1)[0]))
    assert sheet.status_code == 200 and sheet.content[:3] == b"\xff\xd8\xff"
    # Unsigned or tampered, neither the track nor a sheet is served.
    bare = url.split("?", 1)[0] if mode == "query" else url.replace("/t/", "/t/x", 1)
    assert httpx.get(bare).status_code in (401, 403)
    details = httpx.get(f"{origin}/api/videos/{video_id}").json()
    # The same track; each answer signs with its own second's expiry, so compare unsigned.
    unsigned = re.compile(r"\?[^#\n]*")
    assert unsigned.sub("", httpx.get(details["thumbnails_url"]).text) == unsigned.sub("", vtt.text)


def folder(attrs: dict[str, str]) -> str:
    """The rung folder of an I-frame stream's URI, with its slash."""
    return attrs["URI"].rsplit("/", 1)[0] + "/"


def test_iframe_playlist_plays_from_its_signed_url(origin: str, video_id: uuid.UUID) -> None:
    stream = httpx.get(f"{origin}/api/stream/{video_id}").json()
    master = httpx.get(stream["master_url"])
    streams = [attributes(x) for x in master.text.splitlines() if "I-FRAME-STREAM-INF" in x]
    assert len(streams) == len(stream["variants"]) == 2
    iframes_url = urljoin(stream["master_url"], streams[0]["URI"])
    playlist = httpx.get(iframes_url).text
    assert "#EXT-X-I-FRAMES-ONLY" in playlist and "sig=" in playlist
    # One entry's byte range, asked for as a player does: 206 with exactly one whole fragment.
    ranges = re.findall(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", playlist)
    # The rung's own keyframes, read by ffprobe from its media playlist through the origin.
    variant = next(u for _, u in variant_streams(master.text) if u.startswith(folder(streams[0])))
    keyframes = sum(key for _, key in video_packets(urljoin(stream["master_url"], variant)))
    assert len(ranges) == keyframes == KEYFRAMES
    length, offset = map(int, ranges[1])
    media = next(x for x in playlist.splitlines() if x.startswith("iframes.mp4"))
    ranged = httpx.get(
        urljoin(iframes_url, media), headers={"Range": f"bytes={offset}-{offset + length - 1}"}
    )
    assert ranged.status_code == 206 and len(ranged.content) == length
    moof = int.from_bytes(ranged.content[:4], "big")
    assert ranged.content[4:8] == b"moof" and ranged.content[moof + 4 : moof + 8] == b"mdat"
    assert moof + int.from_bytes(ranged.content[moof : moof + 4], "big") == length
    # ffmpeg joins the ranges into one stream: every keyframe decodes, without an error.
    assert decode_frames(iframes_url) == keyframes


@pytest.mark.parametrize("mode", ["query", "token"])
def test_previews_and_byte_ranges_through_an_edge(
    procs: Processes, origin: str, video_id: uuid.UUID, test_root: Path, mode: str
) -> None:
    edge = start_edge(procs, origin, test_root / f"previews-edge-{mode}", name=f"edge-{mode}")
    stream = httpx.get(f"{origin}/api/stream/{video_id}", params={"mode": mode}).json()

    def via_edge(url: str, **headers: str) -> httpx.Response:
        return httpx.get(edge.url + url[url.index("/origin/") :], headers=headers, timeout=30)

    vtt = via_edge(stream["thumbnails_url"])
    assert vtt.status_code == 200, vtt.text
    sheet_uri = cues(vtt.text)[0][2].split("#", 1)[0]
    sheet = via_edge(urljoin(stream["thumbnails_url"], sheet_uri))
    assert sheet.status_code == 200 and sheet.content[:3] == b"\xff\xd8\xff"
    master_url = stream["master_url"]
    uri = next(
        attributes(x)["URI"] for x in via_edge(master_url).text.splitlines() if "I-FRAME" in x
    )
    iframes_url = urljoin(master_url, uri)
    playlist = via_edge(iframes_url).text
    length, offset = map(int, re.findall(r"#EXT-X-BYTERANGE:(\d+)@(\d+)", playlist)[-1])
    media = [x for x in playlist.splitlines() if x.startswith("iframes.mp4")][-1]
    whole = via_edge(urljoin(iframes_url, media))
    ranged = via_edge(urljoin(iframes_url, media), Range=f"bytes={offset}-{offset + length - 1}")
    assert ranged.status_code == 206, ranged.text
    assert ranged.content == whole.content[offset : offset + length]
    edge_url = edge.url + iframes_url[iframes_url.index("/origin/") :]
    assert decode_frames(edge_url) == KEYFRAMES


def test_seek_bar_shows_the_tile_of_the_hovered_time(origin: str, video_id: uuid.UUID) -> None:
    stream = httpx.get(f"{origin}/api/stream/{video_id}").json()
    track = cues(httpx.get(stream["thumbnails_url"]).text)
    with chromium("--autoplay-policy=no-user-gesture-required") as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{origin}/player?video={video_id}")
        page.wait_for_function(
            "() => { const p = window.vspPlayer; return p.seekPreview.cues.length > 0"
            " && Number.isFinite(p.video.duration) && p.video.duration > 0; }",
            timeout=30_000,
        )
        length = page.evaluate("() => window.vspPlayer.video.duration")
        bar = page.locator("#seek-bar").bounding_box()
        assert bar is not None
        page.mouse.move(bar["x"] + 0.6 * bar["width"], bar["y"] + bar["height"] / 2)
        page.wait_for_function("() => !document.getElementById('seek-preview').hidden")
        shown = page.evaluate(
            """() => {
                const box = document.getElementById('seek-preview');
                const style = getComputedStyle(box);
                return { time: window.vspPlayer.seekPreview.shown.time,
                         image: style.backgroundImage, position: style.backgroundPosition,
                         width: style.width, height: style.height };
            }"""
        )
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
    # The pointer's time, then the cue of that time read from the track by this test.
    assert shown["time"] == pytest.approx(0.6 * length, abs=0.05 * length)
    start, _, payload = next(c for c in track if c[0] <= shown["time"] < c[1])
    assert start == pytest.approx(int(0.6 * length), abs=1)
    sheet, _, box = payload.partition("#xywh=")
    x, y, w, h = map(int, box.split(","))
    assert sheet.split("?", 1)[0] in shown["image"] and "sig=" in shown["image"]
    assert shown["position"] == f"{-x}px {-y}px"
    assert (shown["width"], shown["height"]) == (f"{w}px", f"{h}px")
    assert SCREENSHOT.stat().st_size > 10_000
