"""The first playable video: upload -> one ffmpeg ladder -> signed HLS, with real processes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.media import make_clip
from tests.support.polling import wait_for
from tests.support.processes import Processes
from tests.support.signing import signer_of
from tests.support.upload import stream_upload_file, wait_state


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def suite(procs: Processes) -> dict[str, str]:
    upload_proc = procs.service("upload")
    origin_proc = procs.service("origin")
    procs.worker("push")
    return {"upload": upload_proc.url or "", "origin": origin_proc.url or ""}


def test_upload_transcode_and_play(
    suite: dict[str, str], media_dir: Path, account: Account
) -> None:
    clip = make_clip(media_dir / "slice.mp4", seconds=6, size="640x360")
    response = stream_upload_file(suite["upload"], clip, account, title="slice")
    assert response.status_code == 201, response.text
    video = response.json()
    assert response.headers["location"] == f"/api/videos/{video['id']}"
    ready = wait_state(suite["origin"], video["id"], {"ready", "failed"})
    assert ready["state"] == "ready", ready
    assert [r["name"] for r in ready["renditions"]] == ["360p", "240p"]

    stream = httpx.get(f"{suite['origin']}/api/stream/{video['id']}").json()
    master = stream["master_url"]
    assert "sig=" in master and "exp=" in master
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", master, "-map", "0", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert decoded.returncode == 0, decoded.stderr

    # Tampered and expired signatures are refused with a JSON error; missing objects are 404.
    exp = parse_qs(urlsplit(master).query)["exp"][0]
    for bad in (
        with_query(master, sig="0" * 64),
        with_query(master, exp=str(int(exp) + 1)),
        with_query(master, exp="1000"),
    ):
        refused = httpx.get(bad)
        assert refused.status_code == 403
        assert refused.json()["error"] == "forbidden"
    signer = signer_of()
    missing = signer.signed_url(
        f"{suite['origin']}/origin", f"videos/{video['id']}/hls/nope.m4s", 60
    )
    gone = httpx.get(missing)
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"


async def test_not_media_leaves_nothing(
    suite: dict[str, str], res: Resources, tmp_path: Path, account: Account
) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is plain text, not a video\n" * 1000)
    before = {o.key for o in await res.need_store().list("videos/")}
    async with res.need_db().session() as session:
        counts_before = (
            await session.execute(
                __import__("sqlalchemy").text(
                    "SELECT (SELECT count(*) FROM videos), (SELECT count(*) FROM transcode_jobs)"
                )
            )
        ).one()
    response = stream_upload_file(suite["upload"], junk, account)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "not_media"
    assert "not a recognised media file" in body["detail"]
    after = {o.key for o in await res.need_store().list("videos/")}
    assert after == before
    async with res.need_db().session() as session:
        counts_after = (
            await session.execute(
                __import__("sqlalchemy").text(
                    "SELECT (SELECT count(*) FROM videos), (SELECT count(*) FROM transcode_jobs)"
                )
            )
        ).one()
    assert tuple(counts_after) == tuple(counts_before)


def test_sigkill_mid_transcode_then_new_worker(
    procs: Processes, media_dir: Path, res: Resources, account: Account
) -> None:
    upload_proc = procs.service("upload")
    origin_proc = procs.service("origin")
    clip = make_clip(media_dir / "long720.mp4", seconds=40, size="1280x720")
    worker = procs.worker("push")
    video = stream_upload_file(upload_proc.url or "", clip, account).json()
    origin = origin_proc.url or ""
    wait_for(
        lambda: (
            httpx.get(f"{origin}/api/videos/{video['id']}").json()["progress"].get("percent", 0) > 5
        ),
        timeout=60,
        what="transcode under way",
    )
    worker.kill()
    assert httpx.get(f"{origin}/api/videos/{video['id']}").json()["state"] == "transcoding"
    procs.worker("pull")
    ready = wait_state(origin, video["id"], {"ready", "failed"}, timeout=240)
    assert ready["state"] == "ready", ready
    names = [r["name"] for r in ready["renditions"]]
    assert names == ["720p", "480p", "360p", "240p"]
    assert len(set(names)) == len(names)
