"""``vsp jobs dead`` and ``vsp jobs replay``: a dead-lettered job is listed with why it died,
and once its cause is gone a replay runs it to success, once, leaving the dead queue empty.

A real worker on queues of its own; the CLI runs as the operator would run it, a process with
the platform's settings in its environment.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from shared.db.models import TranscodeJobRow
from shared.runtime.resources import Resources
from tests.support.infra import own_queues
from tests.support.media import faststart_clip
from tests.support.processes import VSP, Processes
from tests.support.transcode import job_row, queued_video, run_ids, state_in, with_outbox_row


async def vsp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``vsp ARGS`` as a process with ``env``; its exit status and output."""
    return await asyncio.to_thread(
        subprocess.run, [*VSP, *args], env=env, capture_output=True, text=True, timeout=60
    )


async def dead_jobs(env: dict[str, str]) -> list[dict[str, Any]]:
    listed = await vsp(env, "jobs", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs: list[dict[str, Any]] = json.loads(listed.stdout)
    return jobs


async def test_a_dead_job_is_listed_with_its_reason_and_replayed_once_its_cause_is_gone(
    procs: Processes, res: Resources, media_dir: Path, test_env: dict[str, str]
) -> None:
    clip = faststart_clip(media_dir / "jobs-cli-180.mp4", seconds=4, size="320x180")
    job = await with_outbox_row(res, await queued_video(res, clip))
    # The stored source is not media: the job fails for good on its first attempt.
    await res.need_store().put_bytes(job.source_key, b"not a video at all " * 64)

    async with own_queues(res, procs) as (mq, queues):
        env = {**test_env, **queues}
        worker = procs.worker("push", env=queues)
        await mq.need_broker().publish_job(job)
        video = await state_in(res, job.video_id, {"failed", "ready"}, within=60)
        assert video.state == "failed" and video.error, video.error
        await job_row(res, job, "failed")

        jobs = await dead_jobs(env)
        assert [j["job_id"] for j in jobs] == [str(job.job_id)]
        dead = jobs[0]
        assert dead["video_id"] == str(job.video_id) and dead["type"] == "transcode"
        assert dead["reason"] == dead["error"] == video.error
        assert (dead["attempts"], dead["outcome"], dead["video_state"]) == (1, "failed", "failed")
        assert dead["died_at"] is not None
        table = await vsp(env, "jobs", "dead")
        assert table.returncode == 0, table.stderr
        header, line = table.stdout.splitlines()
        assert header.split()[:3] == ["job", "type", "video"]
        assert line.startswith(str(job.job_id)) and video.error in line

        # Refused: no job named, or one that is not dead.
        assert (await vsp(env, "jobs", "replay")).returncode == 2
        unknown = await vsp(env, "jobs", "replay", str(job.video_id))
        assert unknown.returncode == 1 and "no dead-lettered job" in unknown.stderr
        assert [j["job_id"] for j in await dead_jobs(env)] == [str(job.job_id)]

        # The cause removed, the replay runs it to success.
        await res.need_store().put_file(job.source_key, clip)
        replayed = await vsp(env, "jobs", "replay", str(job.job_id), "--json")
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout) == {"replayed": [str(job.job_id)]}
        video = await state_in(res, job.video_id, {"ready", "failed"}, within=60)
        assert video.state == "ready" and video.error is None
        row = await job_row(res, job, "succeeded")
        assert row.attempts == 1  # reset by the replay

        assert await dead_jobs(env) == []
        async with res.need_db().session() as session:
            rows = await session.scalar(
                select(func.count())
                .select_from(TranscodeJobRow)
                .where(TranscodeJobRow.video_id == job.video_id)
            )
        assert rows == 1
        assert len(await run_ids(res, job.video_id)) == 1
        assert worker.log().count(f"job {job.job_id} done (succeeded)") == 1
