"""The front door (nginx, as `vsp up` runs it): one host for pages, APIs, tus and streams, over
HTTPS with HTTP/2 and over plain HTTP, in front of the whole platform on free ports.

An upload streamed through it with ``curl --http2`` becomes a video whose signed URLs point back
at the front door over https; ffmpeg plays them through nginx -> balancer -> edge. The pages,
the tus endpoint, the redirectors and the dashboard answer under their paths; what nginx
refuses itself is JSON like the services' own errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import Account
from tests.support.front_door import Platform, curl, start_platform
from tests.support.hls import decode_stream
from tests.support.media import make_clip
from tests.support.processes import Processes
from tests.support.upload import TUS, wait_state


@pytest.fixture(scope="module")
def platform(test_env: dict[str, str], test_root: Path) -> Iterator[Platform]:
    # The redirectors send the CDN side to the suite's own edges, through the front door.
    env = {
        **test_env,
        "REDIRECTOR_CDN_TARGET": "edges",
        "REDIRECTOR_ORIGIN_HOSTS": '["127.0.0.1"]',
        "REDIRECTOR_RATIO": "4",
    }
    procs = Processes(test_root / "logs" / "front-door", env)
    try:
        yield start_platform(procs, test_root / "front-door")
    finally:
        procs.stop_all()


def test_an_upload_through_the_front_door_plays_through_it_over_h2(
    platform: Platform, account: Account, media_dir: Path
) -> None:
    front = platform.front
    clip = make_clip(media_dir / "front-door.mp4", seconds=4, size="320x180")
    headers = {**account.headers, "Content-Type": "video/mp4"}
    status, version, answer = curl(
        "PUT", f"{front.https}/api/videos?title=Front", clip, front.certificate, headers
    )
    assert (status, version) == (201, "2"), answer
    video = json.loads(answer)
    origin = platform.suite.urls["origin"][0]
    wait_state(origin, video["id"], {"ready"}, timeout=180)
    with platform.client() as client:
        stream = client.get(f"{front.https}/api/stream/{video['id']}", headers=account.headers)
        assert stream.status_code == 200, stream.text
        assert stream.http_version == "HTTP/2"
        master_url = stream.json()["master_url"]
        assert master_url.startswith(f"{front.https}/origin/"), master_url
        master = client.get(master_url)
        assert master.status_code == 200 and master.http_version == "HTTP/2"
        # Served by an edge behind the balancer, not by the origin.
        assert master.headers["x-cache"] in {"HIT", "MISS", "PASS"}, master.headers
        source = client.get(f"{front.https}/api/videos/{video['id']}", headers=account.headers)
        assert source.json()["state"] == "ready"
    assert decode_stream(master_url) > 3

    # The redirectors behind /r/: one request in four to the URL itself, the others to the same
    # path on the front door, over https still, where an edge serves it.
    with platform.client() as client:
        # One redirector in the suite, so its counter splits these exactly.
        locations = [
            client.get(f"{front.https}/r/", params={"video": master_url}).headers["location"]
            for _ in range(4)
        ]
        relative = master_url.removeprefix(front.https)
        assert sorted(locations) == sorted([master_url, relative, relative, relative])
        through = client.get(
            f"{front.https}/r/", params={"video": master_url}, follow_redirects=True
        )
        assert through.status_code == 200 and through.url.scheme == "https"
        assert through.text.startswith("#EXTM3U")
        assert "x-cache" in through.headers


def test_pages_link_to_the_front_door_paths(platform: Platform) -> None:
    front = platform.front
    with platform.client() as client:
        home = client.get(f"{front.https}/")
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert 'href="/upload"' in home.text, "the player links to the upload page at /upload"
        upload = client.get(f"{front.https}/upload")
        assert upload.status_code == 200
        assert 'href="/player"' in upload.text and 'href="/my"' in upload.text
        assert client.get(f"{front.https}/my").status_code == 200
        assert client.get(f"{front.https}/dashboard").status_code == 200
        assert client.get(f"{front.https}/api/stats").status_code == 200
        assert client.get(f"{front.https}/health").json()["status"] == "healthy"
    # The same pages over plain HTTP, linking to plain HTTP.
    plain = httpx.get(f"{front.http}/upload", timeout=30)
    assert plain.status_code == 200 and 'href="/player"' in plain.text


def test_tus_through_the_front_door(platform: Platform, account: Account) -> None:
    front = platform.front
    body = b"\0" * 1000
    with platform.client() as client:
        created = client.post(
            f"{front.https}/files/",
            headers={**TUS, **account.headers, "Upload-Length": str(len(body))},
        )
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert location.startswith("/files/")
        patched = client.patch(
            f"{front.https}{location}",
            content=body[:400],
            headers={
                **TUS,
                **account.headers,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert patched.status_code == 204, patched.text
        head = client.head(f"{front.https}{location}", headers={**TUS, **account.headers})
        assert head.headers["upload-offset"] == "400"
        gone = client.delete(f"{front.https}{location}", headers={**TUS, **account.headers})
        assert gone.status_code == 204


def test_what_nginx_refuses_itself_is_json(platform: Platform, tmp_path: Path) -> None:
    front = platform.front
    with platform.client() as client:
        # Only the public paths: no metrics, health, purge or redirector configuration.
        for path in ("/no/such/path", "/metrics", "/readyz", "/purge", "/r/config", "/r/metrics"):
            missing = client.get(f"{front.https}{path}")
            assert missing.status_code == 404, path
            assert missing.json()["error"] == "not_found", path
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    status, _, answer = curl("POST", f"{front.https}/api/auth/token", big, front.certificate, {})
    assert status == 413
    assert json.loads(answer)["error"] == "payload_too_large"
    # The upload paths take any size: the service decides (here: it wants a credential).
    status, _, answer = curl("PUT", f"{front.https}/api/videos", big, front.certificate, {})
    assert status == 401, answer
    assert json.loads(answer)["error"] == "unauthorized"
