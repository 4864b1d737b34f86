"""Deleting a video while its transcode runs: the worker stops and leaves no object behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil

from services.origin.catalog import OPERATOR, delete_video
from shared.runtime.resources import Resources
from shared.videos import progress
from tests.support.infra import own_queues
from tests.support.media import make_clip
from tests.support.polling import eventually, logged
from tests.support.processes import Processes
from tests.support.transcode import queued_video, run_ids


async def test_a_delete_mid_transcode_stops_the_worker_and_leaves_nothing(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    job = await queued_video(res, make_clip(media_dir / "t360-60.mp4", seconds=60))
    # Queues of its own: a job another test left on the session's queue would otherwise run
    # first, at this test's slow settings.
    async with own_queues(res, procs) as (mq, env):
        # A slow encode, so the delete surely lands while ffmpeg runs.
        worker = procs.worker(
            "push", env={**env, "TRANSCODER_PRESET": "slower", "TRANSCODER_THREADS": "1"}
        )
        await mq.need_broker().publish_job(job)

        async def publishing() -> bool:
            latest = await progress.latest(res.need_redis(), str(job.video_id))
            return latest.get("stage") == "transcoding" and bool(await run_ids(res, job.video_id))

        await eventually(publishing, within=120, what="segments of the run to be published")
        encoders = [
            p
            for p in psutil.Process(worker.popen.pid).children(recursive=True)
            if "ffmpeg" in p.name()
        ]
        assert encoders, "the worker runs no ffmpeg"

        # What the origin's DELETE /api/videos/{id} runs, while ffmpeg is still writing.
        await delete_video(res, job.video_id, OPERATOR)

        # The worker checks about once a second; on a busy machine give it longer.
        log = await logged(worker, f"job {job.job_id} done (skipped)", within=30)
        assert "was deleted mid-transcode" in log
        assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in encoders)
        store = res.need_store()
        assert await store.list(f"videos/{job.video_id}/") == []
        # Nothing trickles in afterwards either.
        await asyncio.sleep(2)
        assert await store.list(f"videos/{job.video_id}/") == []
