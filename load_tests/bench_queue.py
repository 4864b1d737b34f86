"""Queue-wait latency (publish to start) of push workers vs pull workers, side by side.

Real RabbitMQ, real worker processes running the transcoder's own ``Worker`` loops (push:
basic_consume with prefetch 1; pull: basic_get with backoff 0.05-2 s). Only the job body is
swapped for a short real ffmpeg encode (a 0.4 s 160x120 clip), so the queue, not the
transcode, is what is measured. Two scenarios per mode:

- low rate: one job every ``--interval`` seconds (jittered), so workers are mostly idle;
- saturation: ``--burst`` jobs published at once, more than the workers can start together.

Usage::

    .venv/bin/python -m load_tests.bench_queue --jobs 8 --interval 3 --burst 20 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from load_tests.harness import Comparison, Report, command_line
from shared.mq.broker import Broker
from shared.mq.messages import PurgeJob, TranscodeJob
from shared.mq.topology import Topology
from shared.runtime.resources import Resources
from tests.support.infra import delete_topology
from tests.support.processes import Processes

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RETRY_DELAYS = (1, 1, 1)
WORK = [
    "ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
    "testsrc2=size=160x120:rate=25:duration=0.4", "-c:v", "libx264", "-preset", "ultrafast",
    "-f", "null", "-",
]  # fmt: skip


async def bench_job(res: Resources, settings: Any, job: TranscodeJob | PurgeJob) -> None:
    """Do a short real encode, then record the job's queue wait and service time."""
    wait = time.time() - job.published_at
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*WORK)
    await proc.wait()
    record = {"wait": wait, "service": time.monotonic() - started, "pid": os.getpid()}
    await res.need_redis().rpush(os.environ["BENCH_RESULTS_KEY"], json.dumps(record))


def worker_main(mode: str, prefix: str) -> None:
    """A transcoder worker whose transcode handler is ``bench_job``."""
    from services.transcoder import worker
    from services.transcoder.settings import Settings

    worker.HANDLERS["transcode"] = bench_job
    # Announce readiness only now: importing can take seconds on a busy machine.
    SyncRedis.from_url(REDIS_URL).rpush(os.environ["BENCH_READY_KEY"], os.getpid())
    settings = Settings(
        transcoder_mode=mode, mq_prefix=prefix, transcoder_metrics_port=0, log_level="WARNING"
    )  # type: ignore[arg-type]
    worker.run(settings)


async def wait_results(redis: Redis, key: str, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while await redis.llen(key) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {await redis.llen(key)} of {count} results arrived")
        await asyncio.sleep(0.1)


def start_workers(procs: Processes, mode: str, prefix: str, count: int, results_key: str) -> None:
    """``count`` workers of ``mode``; each says it is ready on the results key's ``:ready`` list."""
    env = {
        "BENCH_RESULTS_KEY": results_key,
        "BENCH_READY_KEY": results_key + ":ready",
        "MQ_RETRY_DELAYS_SECONDS": json.dumps(RETRY_DELAYS),
        "PYTHONUNBUFFERED": "1",
    }
    args = [sys.executable, "-m", "load_tests.bench_queue", "--worker", mode, "--prefix", prefix]
    for n in range(count):
        procs.start(f"worker-{mode}-{n}", args, env=env)


async def consumers_ready(broker: Broker, mode: str, count: int, within: float = 120) -> None:
    """Push workers show up as consumers; pull workers are checked by the warm-up jobs."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        channel = await broker.connection.channel()
        queue = await channel.declare_queue(broker.topology.jobs_queue, passive=True)
        consumers = queue.declaration_result.consumer_count
        await channel.close()
        if mode == "pull" or consumers >= count:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("workers did not start")


def key_of(run: str, mode: str) -> str:
    return f"bench:queue:{run}:{mode}"


async def scenario(
    broker: Broker,
    redis: Redis,
    key: str,
    into: dict[str, list[float]],
    name: str,
    jobs: int,
    interval: float,
) -> None:
    """Publish ``jobs`` (all at once when ``interval`` is 0) and collect their waits."""
    await redis.delete(key)
    for _ in range(jobs):
        job = TranscodeJob(job_id=uuid.uuid4(), video_id=uuid.uuid4(), source_key="bench")
        await broker.publish_job(job)
        if interval:
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
    await wait_results(redis, key, jobs, within=120 + jobs * 5)
    if name == "warmup":
        return
    for raw in await redis.lrange(key, 0, -1):
        record = json.loads(raw)
        into[name].append(record["wait"])
        into["service"].append(record["service"])


def summary(waits: list[float]) -> dict[str, float]:
    ordered = sorted(waits)
    return {
        "mean_s": statistics.fmean(ordered),
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max_s": ordered[-1],
    }


@dataclass
class Pools:
    """A pool of workers per mode, each on a topology of its own, warmed up and ready."""

    run: str
    redis: Redis
    brokers: dict[str, Broker] = field(default_factory=dict)

    async def scenario(
        self, mode: str, into: dict[str, list[float]], name: str, jobs: int, interval: float
    ) -> None:
        """``scenario`` on the pool of ``mode``."""
        await scenario(
            self.brokers[mode], self.redis, key_of(self.run, mode), into, name, jobs, interval
        )


@contextlib.asynccontextmanager
async def worker_pools(workers: int, logs: Path) -> AsyncIterator[Pools]:
    """``workers`` push and ``workers`` pull bench workers, started together and warmed up;
    stopped, and their queues and results deleted, at the end (their logs kept in ``logs`` on
    failure)."""
    pools = Pools(uuid.uuid4().hex[:6], Redis.from_url(REDIS_URL))
    procs = Processes(logs, dict(os.environ))
    try:
        for mode in ("push", "pull"):
            broker = Broker(AMQP_URL, Topology(f"benchq{pools.run}{mode}", RETRY_DELAYS))
            pools.brokers[mode] = broker
            await broker.connect()
            start_workers(procs, mode, broker.topology.prefix, workers, key_of(pools.run, mode))
        for mode, broker in pools.brokers.items():
            key = key_of(pools.run, mode)
            await wait_results(pools.redis, key + ":ready", workers, within=180)
            await consumers_ready(broker, mode, workers)
            # Warm-up: the workers have taken jobs before anything is measured.
            await scenario(broker, pools.redis, key, {}, "warmup", workers * 2, 0)
        yield pools
    except BaseException:
        print(f"the workers' logs: {logs}", flush=True)
        raise
    finally:
        procs.stop_all()
        for mode, broker in pools.brokers.items():
            await delete_topology(broker.connection, broker.topology)
            await broker.close()
            await pools.redis.delete(key_of(pools.run, mode), key_of(pools.run, mode) + ":ready")
        await pools.redis.aclose()
    shutil.rmtree(logs, ignore_errors=True)


async def bench(args: argparse.Namespace) -> Report:
    logs = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    runs: dict[str, dict[str, list[float]]] = {
        m: {"low": [], "saturation": [], "service": []} for m in ("push", "pull")
    }
    # Both modes run at once, each on its own queue, and the scenarios alternate between them,
    # so a change in machine load hits push and pull alike.
    async with worker_pools(args.workers, logs) as pools:
        for round_ in range(args.rounds):
            for name, jobs, interval in (
                ("low", args.jobs, args.interval),
                ("saturation", args.burst, 0.0),
            ):
                for mode in pools.brokers:
                    await pools.scenario(mode, runs[mode], name, jobs, interval)
            print(f"round {round_ + 1} done", flush=True)
    results = {
        mode: {
            "low": summary(r["low"]),
            "saturation": summary(r["saturation"]),
            "service_mean_s": statistics.fmean(r["service"]),
        }
        for mode, r in runs.items()
    }
    for mode in results:
        print(mode, json.dumps(results[mode]))
    report = Report("bench_queue", command_line())
    for name, label in (
        ("low", f"1 job / {args.interval} s"),
        ("saturation", f"{args.burst} at once"),
    ):
        for stat in ("mean_s", "p95_s"):
            push, pull = results["push"][name][stat], results["pull"][name][stat]
            report.comparisons.append(
                Comparison(
                    f"queue wait {stat[:-2]}, {label}, {args.workers} workers",
                    "s", push, pull, "pull (basic_get, backoff 0.05-2 s)",
                    higher_is_better=False,
                    notes=f"push cuts it by {100 * (1 - push / pull):.0f}%" if pull else "",
                )
            )  # fmt: skip
    report.extra = {"results": results, "workers": args.workers, "rounds": args.rounds}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers per mode")
    parser.add_argument("--jobs", type=int, default=12, help="jobs in the low-rate scenario")
    parser.add_argument("--interval", type=float, default=3.0, help="mean seconds between jobs")
    parser.add_argument("--burst", type=int, default=20, help="jobs in the saturation burst")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both")
    parser.add_argument("--worker", choices=("push", "pull"), help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.prefix)
        return
    report = asyncio.run(bench(args))
    report.write()
    for c in report.comparisons:
        print(f"{c.name}: push {c.ours:.3f} s, pull {c.baseline:.3f} s ({c.notes})")


if __name__ == "__main__":
    main()
