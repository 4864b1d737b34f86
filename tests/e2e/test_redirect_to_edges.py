"""Redirects to the suite's own edges (REDIRECTOR_CDN_TARGET=edges): origin, two edges behind
haproxy, two redirectors and nginx in front, a real viewer following the redirects and ffmpeg
playing what the CDN side reached."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from shared.runtime.resources import Resources
from tests.support.edge import start_edge
from tests.support.hls import decode_stream
from tests.support.media import make_ladder
from tests.support.metrics import metric
from tests.support.origin import SeededVideo, seed_video
from tests.support.processes import Proc, Processes
from tests.support.proxies import start_haproxy, start_nginx
from tests.support.redirector import empty_config_table, start_redirectors

RATIO = 4
REDIRECTORS = 2
VIDEO_SECONDS = 4


def edge_requests(edges: list[Proc]) -> float:
    """Object requests the edges answered, whatever their cache result."""
    return sum(metric(edge.url, "edge_requests_total") for edge in edges)


def follow_ratio(
    viewer: httpx.Client, master_url: str, nginx_url: str
) -> dict[str, list[httpx.Response]]:
    """Follow RATIO redirects per redirector behind nginx; the final answers by side.

    nginx's round robin gives each redirector RATIO requests in a row: one origin answer each.
    """
    reference = urlsplit(master_url)._replace(scheme="", netloc="").geturl()
    landed: dict[str, list[httpx.Response]] = {"origin": [], "cdn": []}
    for _ in range(RATIO * REDIRECTORS):
        final = viewer.get("/", params={"video": master_url})
        (redirect,) = final.history
        assert redirect.status_code == 302
        assert final.status_code == 200, final.text
        assert final.text.startswith("#EXTM3U") and "#EXT-X-STREAM-INF" in final.text
        location = redirect.headers["location"]
        if location == master_url:
            landed["origin"].append(final)
            continue
        # A path-absolute Location: the viewer stayed on nginx, which handed it to an edge.
        assert location == reference
        assert str(final.url) == f"{nginx_url}{reference}"
        landed["cdn"].append(final)
    return landed


@pytest.fixture
async def video(res: Resources, media_dir: Path) -> SeededVideo:
    ladder = make_ladder(media_dir, seconds=VIDEO_SECONDS)
    return await seed_video(res, ladder, title="to-edges", seconds=VIDEO_SECONDS)


def test_the_cdn_side_plays_from_the_edges_behind_the_same_host(
    procs: Processes, tmp_path: Path, test_env: dict[str, str], video: SeededVideo
) -> None:
    empty_config_table(test_env["DATABASE_URL"])
    origin = procs.service("origin")
    edges = [
        start_edge(procs, origin.url, tmp_path / name, name=name) for name in ("edge-1", "edge-2")
    ]
    haproxy = start_haproxy(procs, tmp_path / "haproxy", [edge.url for edge in edges])
    redirectors = start_redirectors(
        procs,
        REDIRECTORS,
        {
            "REDIRECTOR_CDN_TARGET": "edges",
            "REDIRECTOR_ORIGIN_HOSTS": '["127.0.0.1"]',
            "REDIRECTOR_RATIO": str(RATIO),
        },
    )
    nginx = start_nginx(
        procs,
        tmp_path / "nginx",
        [r.url for r in redirectors],
        haproxy=haproxy.url.removeprefix("http://"),
    )
    for redirector in redirectors:
        config = httpx.get(f"{redirector.url}/config").json()
        assert (config["cdn_target"], config["ratio"]) == ("edges", RATIO)

    stream = f"{origin.url}/api/stream/{video.id}"
    landed: dict[str, list[httpx.Response]] = {"origin": [], "cdn": []}
    with httpx.Client(base_url=nginx.url, follow_redirects=True, timeout=30) as viewer:
        # Query-signed, then path-token URLs: both are paths the edges serve.
        for mode in ("query", "token"):
            master_url = httpx.get(stream, params={"mode": mode}).json()["master_url"]
            assert urlsplit(master_url).netloc == origin.url.removeprefix("http://")
            for side, answers in follow_ratio(viewer, master_url, nginx.url).items():
                landed[side] += answers
    assert len(landed["origin"]) == 2 * REDIRECTORS
    assert len(landed["cdn"]) == 2 * REDIRECTORS * (RATIO - 1)
    for answer in landed["origin"]:
        assert "x-cache" not in answer.headers
    for answer in landed["cdn"]:
        # A query-signed playlist is signed for its viewer: passed through, never cached.
        assert answer.headers["x-cache"] in ("HIT", "MISS", "STALE", "PASS")
        assert answer.headers["x-edge-id"] in ("edge-1", "edge-2")

    # The master's children are relative: ffmpeg asks nginx, and the edges answer every object.
    segments = [key for key in video.files if key.endswith((".mp4", ".m4s"))]
    before = edge_requests(edges)
    seconds = decode_stream(str(landed["cdn"][0].url))
    assert abs(seconds - VIDEO_SECONDS) < 0.5, seconds
    assert edge_requests(edges) - before >= len(segments)
