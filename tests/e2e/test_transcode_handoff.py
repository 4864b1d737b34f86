"""A worker that dies or is stopped mid-job loses nothing and duplicates nothing.

SIGKILL: the broker redelivers the unacked job when the connection drops, ffmpeg dies with its
worker, and the next worker waits for the dead run's lease to lapse, then starts over. SIGTERM:
the worker hands the job back at once (nack with requeue, lease released) and exits cleanly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import psutil

from shared.runtime.resources import Resources
from shared.videos import progress
from tests.support.media import make_clip
from tests.support.polling import eventually, logged
from tests.support.processes import Processes
from tests.support.transcode import job_row, queued_video, run_ids, state_in, with_outbox_row

# The next worker waits for a killed worker's lease to lapse; keep that wait short here.
SHORT_LEASE = {"TRANSCODER_LEASE_SECONDS": "3"}


async def transcoding_under_way(res: Resources, video_id: object) -> None:
    async def check() -> bool:
        latest = await progress.latest(res.need_redis(), str(video_id))
        return latest.get("stage") == "transcoding" and latest.get("percent", 0) > 5

    await eventually(check, within=120, what="the transcode to be under way")


async def test_sigkill_mid_job_another_worker_completes_it(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    job = await queued_video(res, make_clip(media_dir / "t240-30.mp4", seconds=30, size="426x240"))
    doomed = procs.worker("push", env=SHORT_LEASE)
    await res.need_broker().publish_job(job)
    await transcoding_under_way(res, job.video_id)
    encoders = [
        p for p in psutil.Process(doomed.popen.pid).children(recursive=True) if "ffmpeg" in p.name()
    ]
    assert encoders, "the worker runs no ffmpeg"
    doomed.kill()

    async def encoders_gone() -> bool:
        return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in encoders)

    await eventually(encoders_gone, within=10, what="ffmpeg to die with its worker")
    assert (await state_in(res, job.video_id, {"transcoding"}, within=1)).state == "transcoding"

    survivor = procs.worker("pull", env=SHORT_LEASE)
    video = await state_in(res, job.video_id, {"ready", "failed"}, within=240)
    assert video.state == "ready", video.error
    assert [r.name for r in video.renditions] == ["240p"]
    assert len(await run_ids(res, job.video_id)) == 1
    log = await logged(survivor, f"job {job.job_id} done")
    assert log.count(f"job {job.job_id} (transcode") == 1


async def test_sigterm_hands_the_job_back_cleanly(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    job = await with_outbox_row(
        res, await queued_video(res, make_clip(media_dir / "t360-60.mp4", seconds=60))
    )
    # Both running before the job exists, so the one that does not take it is ready at once.
    workers = [procs.worker("push"), procs.worker("pull")]
    await res.need_broker().publish_job(job)
    await transcoding_under_way(res, job.video_id)
    marker = f"job {job.job_id} (transcode"
    leaving = next(w for w in workers if marker in w.log())
    taking_over = next(w for w in workers if w is not leaving)

    stopped_at = time.monotonic()
    assert leaving.stop() == 0
    assert time.monotonic() - stopped_at < 10
    assert f"job {job.job_id} handed back" in leaving.log()

    video = await state_in(res, job.video_id, {"ready", "failed"}, within=240)
    assert video.state == "ready", video.error
    assert [r.name for r in video.renditions] == ["360p", "240p"]
    assert len(await run_ids(res, job.video_id)) == 1
    # The same delivery, not a retry: the job came back as attempt 1 and ran once more.
    log = await logged(taking_over, f"job {job.job_id} done")
    started = re.findall(rf"job {job.job_id} \(transcode, video \S+, attempt (\d+)\) started", log)
    assert started == ["1"]
    mode = "push" if "worker-push" in taking_over.name else "pull"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{taking_over.url}/metrics")).text
    assert f'transcode_jobs_total{{mode="{mode}",outcome="succeeded"}} 1.0' in metrics
    assert f'transcode_queue_wait_seconds_count{{mode="{mode}"}} 1.0' in metrics
    # The job's row tells the same story: the second run, by the other worker, succeeded.
    row = await job_row(res, job, "succeeded")
    assert (row.worker_mode, row.attempts) == (mode, 1)
    assert row.started_at is not None and row.finished_at is not None
