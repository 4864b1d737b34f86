"""Jobs that cannot succeed: retried with backoff, then failed, dead-lettered, cleaned up.

Real worker processes, each test on queues of its own (retry delays 1 s, 4 attempts in all).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from shared.runtime.resources import Resources
from tests.support.infra import own_queues
from tests.support.media import faststart_clip, make_clip, truncate
from tests.support.polling import eventually
from tests.support.processes import Processes
from tests.support.transcode import (
    dead_letters,
    job_row,
    queued_video,
    runs_removed,
    state_in,
    with_outbox_row,
)


async def test_corrupt_and_truncated_sources_fail_after_the_attempts_cap(
    procs: Processes, res: Resources, media_dir: Path, tmp_path: Path
) -> None:
    topo = res.need_broker().topology
    whole = faststart_clip(media_dir / "fast240.mp4", seconds=8, size="426x240")
    truncated = await with_outbox_row(
        res, await queued_video(res, truncate(whole, tmp_path / "truncated.mp4", 0.5))
    )
    # A valid header over garbage: it probes, then fails to decode.
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(whole.read_bytes()[:2048] + bytes(range(256)) * 400)
    corrupt = await queued_video(res, garbage)

    async with own_queues(res, procs) as (mq, env):
        worker = procs.worker("pull", env=env)
        for job in (truncated, corrupt):
            await mq.need_broker().publish_job(job)

        for job, words in ((truncated, "truncated or corrupt"), (corrupt, "the encoder stopped")):
            video = await state_in(res, job.video_id, {"failed", "ready"}, within=120)
            assert video.state == "failed"
            assert video.error and words in video.error, video.error
            assert video.master_key is None and video.renditions == []
            # Partial segments were published while ffmpeg ran; none may remain. The worker
            # removes them, then dead-letters the job, just after it marks the video failed.
            await runs_removed(res, job.video_id)
            dead = await dead_letters(mq, job.video_id)
            assert len(dead) == 1
            assert dead[0].headers["x-failure-reason"] == video.error
            assert b'"attempt":%d' % topo.max_attempts in dead[0].body

        log = worker.log()
        assert log.count(f"job {truncated.job_id} attempt") == topo.max_attempts - 1
        row = await job_row(res, truncated, "failed")
        assert (row.worker_mode, row.attempts) == ("pull", topo.max_attempts)
        assert row.started_at is not None and row.finished_at is not None
        assert row.started_at <= row.finished_at
        # The counters move just after the dead letter is published: poll briefly. The worker
        # consumed this test's queue only, so the counts are exact.
        wanted = {"failed": 2.0, "retried": 2.0 * (topo.max_attempts - 1)}
        async with httpx.AsyncClient() as client:

            async def counted() -> dict[str, float] | None:
                counts = _job_counts((await client.get(f"{worker.url}/metrics")).text)
                return counts if all(counts.get(k, 0) >= v for k, v in wanted.items()) else None

            counts = await eventually(counted, within=15, what="the job counters")
        assert {k: counts.get(k, 0) for k in wanted} == wanted, counts


def _job_counts(metrics: str) -> dict[str, float]:
    """transcode_jobs_total of the pull worker, by outcome."""
    counts = {}
    for line in metrics.splitlines():
        match = re.match(r'transcode_jobs_total\{mode="pull",outcome="(\w+)"\} (\S+)', line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


async def test_a_job_over_its_timeout_is_retried_then_failed(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    job = await with_outbox_row(
        res, await queued_video(res, make_clip(media_dir / "t360-60.mp4", seconds=60))
    )
    async with own_queues(res, procs) as (mq, env):
        procs.worker("push", env={**env, "TRANSCODER_JOB_TIMEOUT_SECONDS": "1.5"})
        await mq.need_broker().publish_job(job)
        video = await state_in(res, job.video_id, {"failed", "ready"}, within=90)
        assert video.state == "failed" and video.error == "job timed out"
        await runs_removed(res, job.video_id)
        assert len(await dead_letters(mq, job.video_id)) == 1
        row = await job_row(res, job, "failed")
        assert row.worker_mode == "push", row.worker_mode
