"""Transcoding a video again: the ready ladder keeps playing until the new one is complete.

A viewer plays through the origin the whole time (master, variant, init and media segments
with signed URLs, the stream API fetched again every second as a player refreshing its URLs):
not one answer is other than 200 before, during and after the switch to the new run, and the
replaced run is deleted once its grace is over. A re-transcode that fails leaves the ready run
serving and says why in the video's details; a failed video runs again and is exposed as it
goes. Real worker and origin processes on queues of their own.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
from sqlalchemy import select

from shared.db.models import TranscodeJobRow, VideoState
from shared.db.repositories import VideoRepository
from shared.media.hls import referenced_uris
from shared.mq.messages import TranscodeJob
from shared.runtime.resources import Resources
from tests.support.accounts import Account, create_account
from tests.support.infra import own_queues
from tests.support.media import faststart_clip, truncate
from tests.support.polling import eventually
from tests.support.processes import Processes
from tests.support.transcode import (
    dead_letters,
    queued_video,
    run_ids,
    state_in,
    video_row,
    with_outbox_row,
)

GRACE_SECONDS = 4


@dataclass
class Viewer:
    """Plays a video through the origin in a thread, refreshing its stream URLs each second."""

    origin: str
    video_id: uuid.UUID
    failures: list[str] = field(default_factory=list)
    masters: list[str] = field(default_factory=list)  # master keys, in the order first seen
    fetches: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            refreshed, master_url, turn = 0.0, "", 0
            while not self.stop.is_set():
                if time.monotonic() - refreshed >= 1:
                    stream = client.get(f"{self.origin}/api/stream/{self.video_id}")
                    if stream.status_code != 200:
                        self.failures.append(f"stream API {stream.status_code}: {stream.text}")
                        continue
                    master_url, refreshed = stream.json()["master_url"], time.monotonic()
                    key = urlsplit(master_url).path.removeprefix("/origin/")
                    if key not in self.masters:
                        self.masters.append(key)
                master = self._get(client, master_url)
                variant_url = urljoin(master_url, referenced_uris(master)[0])
                variant = self._get(client, variant_url)
                uris = referenced_uris(variant)  # EXT-X-MAP's init segment first
                for uri in (uris[0], uris[1 + turn % (len(uris) - 1)]):
                    self._get(client, urljoin(variant_url, uri))
                turn += 1

    def _get(self, client: httpx.Client, url: str) -> str:
        answer = client.get(url)
        self.fetches += 1
        if answer.status_code != 200:
            self.failures.append(f"{answer.status_code} for {urlsplit(url).path}")
            return "#EXTM3U\n" if url.split("?")[0].endswith(".m3u8") else ""
        return answer.text if url.split("?")[0].endswith(".m3u8") else ""


def run_of(master_key: str) -> str:
    """The run folder of a master playlist's key."""
    return master_key.split("/")[-2]


async def ready_video(res: Resources, mq: Resources, clip: Path, owner: Account) -> TranscodeJob:
    """A video of ``owner`` transcoded by the test's worker, ready."""
    job = await with_outbox_row(res, await queued_video(res, clip))
    async with res.need_db().session() as session:
        await VideoRepository(session).set_fields(job.video_id, owner_id=owner.user_id)
    await mq.need_broker().publish_job(job)
    video = await state_in(res, job.video_id, {"ready", "failed"}, within=120)
    assert video.state == "ready", video.error
    return job


async def job_rows(res: Resources, video_id: uuid.UUID) -> list[TranscodeJobRow]:
    async with res.need_db().session() as session:
        rows = await session.scalars(
            select(TranscodeJobRow)
            .where(TranscodeJobRow.video_id == video_id)
            .order_by(TranscodeJobRow.created_at)
        )
        return list(rows.all())


def watching(viewer: Viewer) -> threading.Thread:
    thread = threading.Thread(target=viewer.run, name="viewer", daemon=True)
    thread.start()
    return thread


async def test_a_viewer_plays_through_a_retranscode_and_the_old_run_goes_after_its_grace(
    procs: Processes, res: Resources, media_dir: Path, account: Account, test_env: dict[str, str]
) -> None:
    clip = faststart_clip(media_dir / "retranscode-240.mp4", seconds=16, size="426x240")
    async with own_queues(res, procs) as (mq, env), httpx.AsyncClient(timeout=10) as http:
        procs.worker("push", env={**env, "TRANSCODER_OLD_RUN_GRACE_SECONDS": str(GRACE_SECONDS)})
        origin = procs.service("origin", env=env).url
        job = await ready_video(res, mq, clip, account)
        video_id = job.video_id
        old = (await video_row(res, video_id)).master_key
        assert old is not None
        url = f"{origin}/api/videos/{video_id}/transcode"
        # A poster its owner uploaded stays through the new run.
        poster = f"videos/{video_id}/posters/own.jpg"
        await res.need_store().put_bytes(poster, b"an uploaded poster", "image/jpeg")
        async with res.need_db().session() as session:
            await VideoRepository(session).set_fields(video_id, poster_key=poster)

        # Who may: the owner; not a stranger, nobody anonymous, no video that does not exist.
        stranger = create_account(test_env)
        assert (await http.post(url)).status_code == 401
        assert (await http.post(url, headers=stranger.headers)).json()["error"] == "forbidden"
        missing = await http.post(
            f"{origin}/api/videos/{uuid.uuid4()}/transcode", headers=account.headers
        )
        assert missing.status_code == 404, missing.text

        viewer = Viewer(origin, video_id)
        thread = watching(viewer)
        try:
            await eventually(_after(viewer, 8), within=20, what="the viewer to start playing")
            queued = await http.post(url, headers=account.headers)
            assert queued.status_code == 202, queued.text
            assert queued.json()["state"] == "ready"
            again = await http.post(url, headers=account.headers)
            assert again.status_code == 409, again.text
            assert again.json()["job_id"] == queued.json()["job_id"]

            async def switched() -> str | None:
                video = await video_row(res, video_id)
                # Ready all along: the old run serves until the new one is complete.
                assert video.state == "ready" and video.master_key is not None
                return video.master_key if video.master_key != old else None

            new = await eventually(switched, within=120, what="the switch to the new run")
            assert run_of(new) != run_of(old)
            assert {run_of(old), run_of(new)} <= await run_ids(res, video_id)
            await eventually(
                lambda: _seen(viewer, new), within=15, what="the viewer on the new run"
            )

            async def old_run_gone() -> bool:
                return await run_ids(res, video_id) == {run_of(new)}

            await eventually(old_run_gone, within=GRACE_SECONDS + 30, what="the old run to go")
            await eventually(_after(viewer, viewer.fetches + 8), within=20, what="more playback")
        finally:
            viewer.stop.set()
            thread.join(timeout=15)
        assert not viewer.failures, viewer.failures[:10]
        assert viewer.masters == [old, new]

        video = await video_row(res, video_id)
        assert video.state == "ready" and video.error is None and video.poster_key == poster
        assert video.renditions and all(
            r.playlist_key.startswith(new.removesuffix("master.m3u8")) for r in video.renditions
        )
        # Three jobs, each settled: the first run, the second, and the old run's deletion.
        rows = await job_rows(res, video_id)
        assert [(r.type, r.outcome) for r in rows] == [
            ("transcode", "succeeded"),
            ("transcode", "succeeded"),
            ("purge", "succeeded"),
        ]
        status = (await http.get(url, headers=account.headers)).json()
        assert status["running"] is False
        assert status["job"]["job_id"] == queued.json()["job_id"]
        assert status["job"]["outcome"] == "succeeded" and status["job"]["retranscode"] is True


async def test_a_failed_retranscode_keeps_the_old_run_and_a_failed_video_runs_again(
    procs: Processes, res: Resources, media_dir: Path, account: Account, tmp_path: Path
) -> None:
    whole = faststart_clip(media_dir / "retranscode-fail-240.mp4", seconds=8, size="426x240")
    async with own_queues(res, procs) as (mq, env), httpx.AsyncClient(timeout=10) as http:
        procs.worker("push", env=env)
        origin = procs.service("origin", env=env).url
        job = await ready_video(res, mq, whole, account)
        video_id = job.video_id
        old = (await video_row(res, video_id)).master_key
        assert old is not None
        # The stored source loses its second half: each attempt publishes segments, then fails.
        await res.need_store().put_file(job.source_key, truncate(whole, tmp_path / "half.mp4", 0.5))

        viewer = Viewer(origin, video_id)
        thread = watching(viewer)
        try:
            await eventually(_after(viewer, 8), within=20, what="the viewer to start playing")
            queued = await http.post(
                f"{origin}/api/videos/{video_id}/transcode", headers=account.headers
            )
            assert queued.status_code == 202, queued.text
            job_id = uuid.UUID(queued.json()["job_id"])

            async def settled() -> TranscodeJobRow | None:
                rows = [r for r in await job_rows(res, video_id) if r.id == job_id]
                return rows[0] if rows and rows[0].outcome == "failed" else None

            row = await eventually(settled, within=120, what="the re-transcode to fail")
            assert row.error is not None and "truncated or corrupt" in row.error, row.error
            await dead_letters(mq, video_id)
        finally:
            viewer.stop.set()
            thread.join(timeout=15)
        assert not viewer.failures, viewer.failures[:10]
        assert viewer.masters == [old]

        video = await video_row(res, video_id)
        assert (video.state, video.master_key) == ("ready", old)
        assert await run_ids(res, video_id) == {run_of(old)}
        details = (
            await http.get(f"{origin}/api/videos/{video_id}", headers=account.headers)
        ).json()
        assert details["state"] == "ready"
        assert details["error"].startswith("re-transcode failed: "), details["error"]
        assert "truncated or corrupt" in details["error"]
        status = (
            await http.get(f"{origin}/api/videos/{video_id}/transcode", headers=account.headers)
        ).json()
        assert (status["running"], status["job"]["outcome"]) == (False, "failed")
        assert status["job"]["error"] == row.error
        stream = await http.get(f"{origin}/api/stream/{video_id}")
        assert (
            stream.status_code == 200
            and (await http.get(stream.json()["master_url"])).status_code == 200
        )

        # A failed video (its source whole again) is queued and exposed as a first upload is.
        await res.need_store().put_file(job.source_key, whole)
        async with res.need_db().session() as session:
            await VideoRepository(session).set_fields(
                video_id, state=VideoState.failed.value, error="failed before"
            )
        again = await http.post(
            f"{origin}/api/videos/{video_id}/transcode", headers=account.headers
        )
        assert again.status_code == 202, again.text
        assert again.json()["state"] == "queued"
        video = await state_in(res, video_id, {"ready", "failed"}, within=120)
        assert video.state == "ready" and video.error is None
        assert video.master_key is not None and video.master_key != old
        assert await run_ids(res, video_id) == {run_of(video.master_key)}


def _after(viewer: Viewer, fetches: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        assert not viewer.failures, viewer.failures[:10]
        return viewer.fetches >= fetches

    return check


async def _seen(viewer: Viewer, master_key: str) -> bool:
    return master_key in viewer.masters
