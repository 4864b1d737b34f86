"""``vsp jobs``: why a dead letter died, and the table it is listed in."""

from __future__ import annotations

import uuid
from datetime import datetime

from services.cli.jobs import DeadJob, dead_reason, format_table, parse_job


def test_the_workers_reason_comes_first_and_the_brokers_death_gives_the_time() -> None:
    died = datetime(2026, 12, 6, 6, 30, 0)
    death = {"reason": "rejected", "queue": "vsp.transcode.jobs.quorum", "time": died, "count": 1}
    reason, when = dead_reason({"x-failure-reason": b"not media", "x-death": [death]})
    assert (reason, when) == ("not media", "2026-12-06T06:30:00+00:00")


def test_a_job_the_broker_dead_lettered_says_so() -> None:
    death = {"reason": "delivery_limit", "queue": "p.transcode.jobs.quorum", "count": 1}
    reason, when = dead_reason({"x-death": [death]})
    assert reason == (
        "delivered too many times without an ack (delivery_limit), from p.transcode.jobs.quorum"
    )
    assert when is None
    assert dead_reason(None) == ("dead-lettered (no reason recorded)", None)


def test_only_jobs_parse() -> None:
    job_id, video_id = uuid.uuid4(), uuid.uuid4()
    body = f'{{"type":"transcode","job_id":"{job_id}","video_id":"{video_id}","source_key":"k"}}'
    job = parse_job(body.encode())
    assert job is not None and job.job_id == job_id and job.attempt == 1
    assert parse_job(b'{"type":"unknown"}') is None
    assert parse_job(b"\xff") is None


def test_the_table_lines_up_its_columns() -> None:
    jobs = [
        DeadJob("a" * 36, "transcode", "b" * 36, 4, "2026-12-06T06:30:00+00:00", "job timed out"),
        DeadJob(
            "c" * 36,
            "purge",
            None,
            None,
            None,
            "boom",
            video_state="failed",
            video_error="the encoder stopped",
        ),
    ]
    header, first, second = format_table(jobs).splitlines()
    assert header.split() == ["job", "type", "video", "attempts", "died", "at", "reason"]
    assert first.index("transcode") == second.index("purge") == header.index("type")
    assert first.index("job timed out") == second.index("boom") == header.index("reason")
    assert second.endswith("boom (video failed: the encoder stopped)")
    assert second.split()[2:5] == ["-", "-", "-"]
