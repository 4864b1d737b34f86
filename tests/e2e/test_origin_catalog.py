"""The catalog API against the origin process: list, search, details, delete (nothing orphaned)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from shared.db.models import Upload, VideoState
from shared.runtime.resources import Resources
from shared.videos import progress
from tests.support.accounts import Account
from tests.support.media import make_ladder
from tests.support.origin import seed_video
from tests.support.processes import Processes

ADMIN_TOKEN = "catalog-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> str:
    return module_procs.service("origin", env={"ORIGIN_ADMIN_TOKEN": ADMIN_TOKEN}).url


async def test_list_search_and_filter(origin: str, res: Resources, media_dir: Path) -> None:
    ladder = make_ladder(media_dir, seconds=8)
    marker = uuid.uuid4().hex[:8]
    sunset = await seed_video(
        res, ladder, title=f"Sunset {marker}", tags=("beach", marker), seconds=8
    )
    await seed_video(res, ladder, title=f"Mountain {marker}", description="snow", seconds=8)
    pending = await seed_video(
        res, ladder, title=f"Draft {marker}", seconds=8, state=VideoState.transcoding
    )
    async with httpx.AsyncClient(base_url=origin) as client:
        page = (await client.get("/api/videos", params={"q": marker})).json()
        assert page["total"] == 3 and len(page["items"]) == 3
        assert [v["title"] for v in page["items"]] == [
            f"Draft {marker}",
            f"Mountain {marker}",
            f"Sunset {marker}",
        ]  # newest first
        by_title = (await client.get("/api/videos", params={"q": f"sunset {marker}"})).json()
        assert [v["id"] for v in by_title["items"]] == [str(sunset.id)]
        by_tag = (await client.get("/api/videos", params={"q": "beach"})).json()
        assert str(sunset.id) in {v["id"] for v in by_tag["items"]}
        by_description = (await client.get("/api/videos", params={"q": "snow"})).json()
        assert {v["title"] for v in by_description["items"]} >= {f"Mountain {marker}"}
        ready = (await client.get("/api/videos", params={"q": marker, "state": "ready"})).json()
        assert ready["total"] == 2
        assert str(pending.id) not in {v["id"] for v in ready["items"]}
        second = (
            await client.get("/api/videos", params={"q": marker, "limit": 1, "offset": 1})
        ).json()
        assert second["total"] == 3 and [v["title"] for v in second["items"]] == [
            f"Mountain {marker}"
        ]
        item = page["items"][2]
        assert [r["name"] for r in item["renditions"]] == ["360p", "180p"]
        poster = await client.get(item["poster_url"])
        assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
        for bad in ({"limit": 0}, {"offset": -1}, {"state": "melted"}):
            refused = await client.get("/api/videos", params=bad)
            assert refused.status_code == 422 and refused.json()["error"] == "validation_error"


async def test_details_show_state_renditions_and_progress(
    origin: str, res: Resources, media_dir: Path
) -> None:
    ladder = make_ladder(media_dir, seconds=8)
    video = await seed_video(res, ladder, title="busy", seconds=8, state=VideoState.transcoding)
    await progress.publish(res.need_redis(), video.id, stage="transcoding", percent=42.5)
    async with httpx.AsyncClient(base_url=origin) as client:
        details = (await client.get(f"/api/videos/{video.id}")).json()
        assert details["state"] == "transcoding"
        assert details["progress"]["percent"] == 42.5
        assert {r["name"]: r["height"] for r in details["renditions"]} == {"360p": 360, "180p": 180}
        assert details["duration_seconds"] == 8
        queued = await seed_video(res, ladder, title="queued", seconds=8, state=VideoState.queued)
        not_ready = await client.get(f"/api/stream/{queued.id}")
        assert not_ready.status_code == 409
        assert not_ready.json() == {
            "error": "conflict",
            "detail": f"video {queued.id} is not ready to play (state: queued)",
            "state": "queued",
        }
        missing = await client.get(f"/api/videos/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def count_rows(res: Resources, video_id: uuid.UUID) -> tuple[int, ...]:
    async with res.need_db().session() as session:
        row = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM videos WHERE id = :id),"
                    " (SELECT count(*) FROM renditions WHERE video_id = :id),"
                    " (SELECT count(*) FROM transcode_jobs WHERE video_id = :id),"
                    " (SELECT count(*) FROM uploads WHERE video_id = :id)"
                ),
                {"id": video_id},
            )
        ).one()
    return tuple(row)


async def test_delete_removes_objects_and_rows(
    origin: str, res: Resources, media_dir: Path, account: Account
) -> None:
    ladder = make_ladder(media_dir, seconds=8)
    video = await seed_video(res, ladder, title="doomed", seconds=8)
    keep = await seed_video(res, ladder, title="neighbour", seconds=8)
    async with res.need_db().session() as session:
        await session.execute(
            text(
                "INSERT INTO transcode_jobs (id, video_id, type, payload, publish_attempts,"
                " attempts) VALUES (:j, :v, 'transcode', '{}', 0, 0)"
            ),
            {"j": uuid.uuid4(), "v": video.id},
        )
        session.add(
            Upload(
                video_id=video.id,
                expires_at=datetime.now(UTC),
                storage_key=f"{video.prefix}source",
                state="done",
            )
        )
    await progress.publish(res.need_redis(), video.id, stage="done", percent=100)
    store = res.need_store()
    assert len(await store.list(video.prefix)) == len(video.files) + 1
    assert await count_rows(res, video.id) == (1, 2, 1, 1)
    async with httpx.AsyncClient(base_url=origin) as client:
        stream = (await client.get(f"/api/stream/{video.id}")).json()
        assert (await client.get(stream["master_url"])).status_code == 200
        anonymous = await client.delete(f"/api/videos/{video.id}")
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
        assert anonymous.headers["www-authenticate"] == "Bearer"
        # Neither the admin token nor an account's credential.
        wrong = {"Authorization": "Bearer not-the-admin-token"}
        forged = await client.delete(f"/api/videos/{video.id}", headers=wrong)
        assert forged.status_code == 401 and forged.json()["error"] == "unauthorized"
        # An account that does not own the video (it has no owner: only admins may).
        stranger = await client.delete(f"/api/videos/{video.id}", headers=account.headers)
        assert stranger.status_code == 403 and stranger.json()["error"] == "forbidden"
        # Refused deletes touch nothing.
        assert len(await store.list(video.prefix)) == len(video.files) + 1
        assert (await client.get(f"/api/videos/{video.id}")).status_code == 200
        deleted = await client.delete(f"/api/videos/{video.id}", headers=ADMIN)
        assert deleted.status_code == 204, deleted.text
        assert await store.list(video.prefix) == []
        assert await count_rows(res, video.id) == (0, 0, 0, 0)
        assert await progress.latest(res.need_redis(), video.id) == {}
        assert (await client.get(f"/api/videos/{video.id}")).status_code == 404
        assert (await client.get(stream["master_url"])).status_code == 404
        again = await client.delete(f"/api/videos/{video.id}", headers=ADMIN)
        assert again.status_code == 404 and again.json()["error"] == "not_found"
        listed = (await client.get("/api/videos", params={"limit": 1000})).json()
        assert str(video.id) not in {v["id"] for v in listed["items"]}
    # The neighbour is untouched.
    assert len(await store.list(keep.prefix)) == len(keep.files) + 1
    assert await count_rows(res, keep.id) == (1, 2, 0, 0)


async def test_delete_finishes_a_delete_that_failed_half_way(
    origin: str, res: Resources, media_dir: Path
) -> None:
    """A row left marked deleted (objects not yet removed) is finished by deleting again."""
    video = await seed_video(res, make_ladder(media_dir, seconds=8), title="half", seconds=8)
    async with res.need_db().session() as session:
        await session.execute(
            text("UPDATE videos SET state = 'deleted' WHERE id = :id"), {"id": video.id}
        )
    async with httpx.AsyncClient(base_url=origin) as client:
        assert (await client.get(f"/api/videos/{video.id}")).status_code == 404
        assert (await client.delete(f"/api/videos/{video.id}", headers=ADMIN)).status_code == 204
    assert await res.need_store().list(video.prefix) == []
    assert await count_rows(res, video.id) == (0, 0, 0, 0)
