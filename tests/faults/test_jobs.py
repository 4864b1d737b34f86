"""Jobs whose workers die, hang or lose their channel: buried after a limit, or done once.

A poison job (its worker is killed on every delivery) is dead-lettered with a reason after the
jobs queue's delivery limit, and its video is marked failed; the broker's own limit is the
backstop. A job that outlasts RabbitMQ's consumer timeout (the broker then closes the channel
and requeues the message while the job runs) finishes, is recorded once, and its copy is acked
without a second encode. Each test runs on queues of its own; the consumer-timeout tests on a
RabbitMQ node of their own (``PrivateRabbit``) whose timeout is one second.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
import yaml

from services.transcoder.settings import Settings
from shared.mq.broker import Broker
from shared.mq.topology import Topology, deliveries_before
from shared.runtime.resources import Resources
from tests.support.infra import PrivateRabbit, delete_topology, own_queues
from tests.support.media import make_clip
from tests.support.paths import ROOT
from tests.support.polling import eventually, logged
from tests.support.processes import Processes
from tests.support.transcode import (
    dead_letters,
    job_row,
    queued_video,
    run_ids,
    state_in,
    take_dead_letters,
    with_outbox_row,
)

CONSUMER_TIMEOUT_MS = 1000


def _lease_key(video_id: uuid.UUID) -> str:
    """The Redis key of the video's transcode lease; a test holding it stalls the job."""
    return f"vsp:transcode-lease:{video_id}"


async def test_a_poison_job_is_dead_lettered_with_a_reason_after_the_delivery_limit(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    limit = 2
    job = await with_outbox_row(
        res, await queued_video(res, make_clip(media_dir / "poison.mp4", seconds=2, size="426x240"))
    )
    redis = res.need_redis()
    # The job hangs its worker: the lease it waits for is never given up.
    await redis.set(_lease_key(job.video_id), "a stuck holder", px=120_000)
    try:
        async with own_queues(res, procs, delivery_limit=limit) as (mq, env):
            await mq.need_broker().publish_job(job)
            for delivery in range(1, limit + 1):
                worker = procs.worker("pull", env=env)
                await logged(worker, f"started, delivery {delivery}", within=30)
                worker.kill()
            last = procs.worker("push", env=env)
            video = await state_in(res, job.video_id, {"failed", "ready"}, within=30)
            reason = f"transcoding failed: its worker stopped {limit} times on this job"
            assert (video.state, video.error) == ("failed", reason)
            (dead,) = await dead_letters(mq, job.video_id)
            assert dead.headers["x-failure-reason"] == reason
            assert deliveries_before(dead.headers) == 0  # published anew by the worker
            assert f"job {job.job_id} was delivered {limit + 1} times" in last.log()
            await job_row(res, job, "failed")
            assert last.popen.poll() is None
    finally:
        await redis.delete(_lease_key(job.video_id))


async def test_the_broker_dead_letters_a_message_past_the_limit_if_no_worker_buries_it(
    procs: Processes, res: Resources, media_dir: Path
) -> None:
    job = await queued_video(res, make_clip(media_dir / "poison.mp4", seconds=2, size="426x240"))
    async with own_queues(res, procs, delivery_limit=1) as (mq, _):
        broker = mq.need_broker()
        await broker.publish_job(job)
        counts = []
        # A consumer that takes the message and dies before settling it, every time.
        for _ in range(2):
            channel = aio_pika.Channel(broker.connection)
            await channel.initialize()
            queue = await channel.get_queue(broker.topology.jobs_queue)

            async def taken(queue: aio_pika.abc.AbstractQueue = queue) -> object:
                return await queue.get(no_ack=False, fail=False)

            message = await eventually(taken, within=10, what="the job's delivery")
            counts.append(deliveries_before(message.headers))
            await channel.close()
        assert counts == [0, 1]
        (dead,) = await dead_letters(mq, job.video_id)
        (death,) = dead.headers["x-death"]
        assert death["reason"] == "delivery_limit", death
        assert death["queue"] == broker.topology.jobs_queue


def test_the_deployed_consumer_timeout_outlasts_the_longest_job() -> None:
    """docker-compose.yml and the Kubernetes manifest give RabbitMQ a consumer_timeout above
    TRANSCODER_JOB_TIMEOUT_SECONDS, so the broker never takes a running job back."""
    longest_ms = Settings.model_fields["transcoder_job_timeout_seconds"].default * 1000
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (k8s,) = [
        c
        for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "infra.yaml").read_text())
        if doc and doc["kind"] == "StatefulSet"
        for c in doc["spec"]["template"]["spec"]["containers"]
        if c["name"] == "rabbitmq"
    ]
    args = [
        compose["services"]["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"],
        next(e["value"] for e in k8s["env"] if e["name"] == "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"),
    ]
    for value in args:
        match = re.search(r"-rabbit consumer_timeout (\d+)", value)
        assert match and int(match.group(1)) > longest_ms, value


@pytest.fixture(scope="module")
def impatient_rabbit() -> Iterator[PrivateRabbit]:
    """A node whose consumer timeout is one second, checked four times a second."""
    node = PrivateRabbit.create(
        config={"consumer_timeout": str(CONSUMER_TIMEOUT_MS)}, channel_tick_ms=250
    )
    yield node
    node.destroy()


@pytest.fixture
async def impatient(
    impatient_rabbit: PrivateRabbit, res: Resources
) -> AsyncIterator[tuple[Resources, dict[str, str]]]:
    """Resources publishing to queues of their own on that node, and the workers' environment."""
    topology = Topology(f"timeout-{uuid.uuid4().hex[:8]}", (1, 1, 1))
    broker = Broker(impatient_rabbit.url, topology, heartbeat_seconds=0)
    await broker.connect()
    try:
        yield (
            dataclasses.replace(res, broker=broker),
            {"AMQP_URL": impatient_rabbit.url, "MQ_PREFIX": topology.prefix},
        )
    finally:
        await delete_topology(broker.connection, topology)
        await broker.close()


async def _ready_messages(mq: Resources) -> int:
    broker = mq.need_broker()
    channel = aio_pika.Channel(broker.connection)
    await channel.initialize()
    try:
        queue = await channel.declare_queue(broker.topology.jobs_queue, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_a_job_longer_than_the_consumer_timeout_is_done_once(
    mode: str,
    impatient: tuple[Resources, dict[str, str]],
    procs: Processes,
    res: Resources,
    media_dir: Path,
) -> None:
    mq, env = impatient
    clip = make_clip(media_dir / "patient.mp4", seconds=4, size="426x240")
    job = await with_outbox_row(res, await queued_video(res, clip))
    redis = res.need_redis()
    # The job cannot finish before the test lets it: it waits for the video's lease.
    await redis.set(_lease_key(job.video_id), "the test", px=120_000)
    try:
        worker = procs.worker(mode, env=env)
        await mq.need_broker().publish_job(job)
        await logged(worker, f"job {job.job_id} (transcode", within=30)

        # The broker gives up on the running job: it closes the channel and requeues the
        # message, which waits (nobody else consumes) while the job still runs.
        async def requeued() -> bool:
            return await _ready_messages(mq) == 1

        await eventually(requeued, within=30, what="the broker to take the job back")
        await logged(worker, "the broker closed its channel", within=10)
    finally:
        await redis.delete(_lease_key(job.video_id))

    video = await state_in(res, job.video_id, {"ready", "failed"}, within=90)
    assert video.state == "ready", video.error
    await logged(worker, f"job {job.job_id} already succeeded; acking its copy", within=30)

    async def drained() -> bool:
        return await _ready_messages(mq) == 0

    await eventually(drained, within=15, what="the copy to be acked")
    row = await job_row(res, job, "succeeded")
    assert row.worker_mode == mode
    log = worker.log()
    assert log.count(f"job {job.job_id}: ") == 1, "the ladder was planned more than once"
    assert log.count(f"job {job.job_id} done (succeeded)") == 1
    assert len(await run_ids(res, job.video_id)) == 1
    assert not await take_dead_letters(mq, job.video_id)
    assert worker.popen.poll() is None, worker.log()[-3000:]
