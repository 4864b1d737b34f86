"""A video's own poster against a real origin: replaced by its owner or an admin, served signed,
restored to the transcoder's frame, dropped from an edge when replaced, and refused with a JSON
error when hostile (413, 415, 422, 401, 403) with nothing kept.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.db.models import Privacy
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.edge import start_edge
from tests.support.media import ffmpeg_file, make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.polling import eventually, logged
from tests.support.processes import Proc, Processes
from tests.support.security import Leftovers, assert_nothing_kept, refused
from tests.support.transcode import video_row

SECONDS = 12
MAX_BYTES = 200_000


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> Proc:
    return module_procs.service("origin", env={"ORIGIN_POSTER_MAX_BYTES": str(MAX_BYTES)})


@pytest.fixture(scope="module")
def images(media_dir: Path) -> dict[str, bytes]:
    """Real images of each accepted type, and one too wide to be a poster."""
    folder = media_dir / "posters"
    pattern = ("-f", "lavfi", "-i", "testsrc2=s=320x180", "-frames:v", "1")
    made = {kind: ffmpeg_file(folder / f"p.{kind}", *pattern) for kind in ("jpg", "png", "webp")}
    made["wide"] = ffmpeg_file(
        folder / "wide.png", "-f", "lavfi", "-i", "color=c=red:s=5000x64", "-frames:v", "1"
    )
    return {name: path.read_bytes() for name, path in made.items()}


@pytest.fixture
async def video(res: Resources, media_dir: Path, account: Account) -> SeededVideo:
    ladder = make_ladder(media_dir, seconds=SECONDS)
    return await seed_video(
        res, ladder, title="postered", seconds=SECONDS, owner_id=account.user_id
    )


def put_poster(
    origin: Proc, video_id: uuid.UUID, body: bytes | Iterator[bytes], headers: dict[str, str]
) -> httpx.Response:
    return httpx.put(
        f"{origin.url}/api/videos/{video_id}/poster", content=body, headers=headers, timeout=30
    )


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


def delete_poster(origin: Proc, video_id: uuid.UUID, headers: dict[str, str]) -> httpx.Response:
    return httpx.delete(f"{origin.url}/api/videos/{video_id}/poster", headers=headers, timeout=30)


async def test_owner_replaces_and_restores_the_poster(
    origin: Proc,
    procs: Processes,
    res: Resources,
    video: SeededVideo,
    account: Account,
    admin_account: Account,
    images: dict[str, bytes],
    test_root: Path,
) -> None:
    store = res.need_store()
    transcoded = f"{video.prefix}hls/poster.jpg"
    edge = start_edge(procs, origin.url, test_root / f"posters-edge-{uuid.uuid4().hex[:6]}")
    await logged(edge, "video events: listening")

    replaced = put_poster(origin, video.id, images["jpg"], account.headers)
    assert replaced.status_code == 200, replaced.text
    first_key = (await video_row(res, video.id)).poster_key
    assert (
        first_key and first_key.startswith(f"{video.prefix}posters/") and first_key.endswith(".jpg")
    )
    poster_url = replaced.json()["poster_url"]
    assert "sig=" in poster_url
    served = fetch(poster_url)
    assert served.status_code == 200 and served.content == images["jpg"]
    assert served.headers["content-type"] == "image/jpeg"
    # An edge caches the poster (immutable, like a segment) ...
    through_edge = edge.url + poster_url[poster_url.index("/origin/") :]
    assert fetch(through_edge).content == images["jpg"]
    assert fetch(through_edge).headers["x-cache"] == "HIT"

    # ... and drops it when the owner replaces it; the old object is deleted.
    for kind in ("png", "webp"):
        again = put_poster(origin, video.id, images[kind], account.headers)
        assert again.status_code == 200, again.text
    latest = (await video_row(res, video.id)).poster_key
    assert latest and latest.endswith(".webp") and latest != first_key
    assert not await store.exists(first_key)
    assert [o.key for o in await store.list(f"{video.prefix}posters/")] == [latest]
    assert fetch(replaced_url := again.json()["poster_url"]).content == images["webp"]

    async def dropped() -> bool:
        return fetch(through_edge).status_code == 404

    await eventually(dropped, within=15, what="the edge to drop the replaced poster")

    # An admin may too; DELETE brings back the transcoder's frame and deletes the upload.
    assert put_poster(origin, video.id, images["png"], admin_account.headers).status_code == 200
    restored = delete_poster(origin, video.id, account.headers)
    assert restored.status_code == 200, restored.text
    assert (await video_row(res, video.id)).poster_key == transcoded
    assert not await store.list(f"{video.prefix}posters/")
    assert fetch(restored.json()["poster_url"]).content == video.files[transcoded].read_bytes()
    assert fetch(replaced_url).status_code == 404
    # Restoring twice changes nothing.
    assert delete_poster(origin, video.id, account.headers).status_code == 200


async def test_hostile_posters_are_refused_and_nothing_is_kept(
    origin: Proc,
    res: Resources,
    video: SeededVideo,
    account: Account,
    stranger: Account,
    images: dict[str, bytes],
    media_dir: Path,
) -> None:
    hidden = await seed_video(
        res, make_ladder(media_dir, seconds=SECONDS), title="hidden", seconds=SECONDS,
        owner_id=account.user_id, privacy=Privacy.private,
    )  # fmt: skip
    before = await Leftovers.take(res)

    def attempt(body: bytes | Iterator[bytes], who: Account | None = account) -> httpx.Response:
        return put_poster(origin, video.id, body, who.headers if who else {})

    # Size first, before anything is read: declared, and streamed without a length.
    refused(attempt(os.urandom(MAX_BYTES + 1)), 413, error="payload_too_large")
    chunks = (b"\xff\xd8\xff" + bytes(9997) for _ in range(MAX_BYTES // 10_000 + 2))
    refused(attempt(chunks), 413, error="payload_too_large")
    # Type by magic bytes, whatever Content-Type says.
    refused(attempt(b"GIF89a" + bytes(100)), 415, error="unsupported_media_type")
    refused(attempt(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), 415)
    refused(attempt(b""), 400)
    # The right magic, but no image behind it; or an image too large to be a poster.
    junk = images["png"][:64] + os.urandom(4000)
    refused(attempt(junk), 422, error="unprocessable_content", mentions="decode")
    refused(attempt(images["jpg"][: len(images["jpg"]) // 3]), 422)
    refused(attempt(images["wide"]), 422, mentions="5000x64")
    # Who: anonymous 401, another account 403, or 404 for a private video it cannot see.
    refused(attempt(images["jpg"], None), 401, error="unauthorized")
    refused(attempt(images["jpg"], stranger), 403, error="forbidden")
    refused(put_poster(origin, hidden.id, images["jpg"], stranger.headers), 404)
    refused(delete_poster(origin, video.id, {}), 401)
    refused(delete_poster(origin, video.id, stranger.headers), 403)

    assert (await video_row(res, video.id)).poster_key == f"{video.prefix}hls/poster.jpg"
    await assert_nothing_kept(res, before)


def test_the_image_decoder_is_real(images: dict[str, bytes], tmp_path: Path) -> None:
    """The fixtures are what they claim: ffprobe reads each accepted type."""
    for kind in ("jpg", "png", "webp"):
        path = tmp_path / f"p.{kind}"
        path.write_bytes(images[kind])
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=width", "-of", "csv=p=0", path],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        assert out.stdout.strip() == "320"
