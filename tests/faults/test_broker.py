"""RabbitMQ goes away and comes back, or is upgraded: nothing is lost, none of our processes exits.

The outage tests run an upload service and a worker against a RabbitMQ node of their own
(``PrivateRabbit``), so that stopping it disturbs no other test run on the machine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from sqlalchemy import select

from shared.db.models import TranscodeJobRow as JobRow
from shared.mq.broker import Broker
from shared.mq.topology import JOB_ROUTING_KEY, Topology
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.infra import AMQP_URL, PrivateRabbit, delete_topology
from tests.support.media import make_clip
from tests.support.polling import eventually, logged
from tests.support.processes import Proc, Processes
from tests.support.transcode import state_in


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateRabbit]:
    node = PrivateRabbit.create()
    yield node
    node.destroy()


async def _readiness(client: httpx.AsyncClient, proc: Proc) -> dict[str, str]:
    return (await client.get(f"{proc.url}/readyz")).json().get("checks", {})


async def _job_rows(res: Resources, video_id: uuid.UUID) -> list[JobRow]:
    async with res.need_db().session() as session:
        return list(await session.scalars(select(JobRow).where(JobRow.video_id == video_id)))


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_an_upload_while_the_broker_is_down_is_transcoded_once_it_is_back(
    rabbit: PrivateRabbit,
    mode: str,
    procs: Processes,
    res: Resources,
    media_dir: Path,
    account: Account,
) -> None:
    env = {"AMQP_URL": rabbit.url, "MQ_PREFIX": f"outage-{mode}-{uuid.uuid4().hex[:6]}"}
    upload = procs.service("upload", env=env, wait=False)
    worker = procs.worker(mode, env=env, wait=False)
    procs.wait_ready([upload, worker])
    clip = make_clip(media_dir / "outage.mp4", seconds=4, size="426x240")

    await asyncio.to_thread(rabbit.stop_app)
    try:
        async with httpx.AsyncClient(timeout=30) as client:

            async def broker_down() -> bool:
                return (await _readiness(client, upload)).get("rabbitmq") == "down"

            await eventually(broker_down, within=15, what="the upload service to see it down")
            response = await client.put(
                f"{upload.url}/api/videos",
                params={"title": "during the outage"},
                content=clip.read_bytes(),
                headers={**account.headers, "Content-Type": "application/octet-stream"},
            )
            assert response.status_code == 201, response.text
            video_id = uuid.UUID(response.json()["id"])
            # The job waits in the outbox, unsent, while the broker is away.
            (row,) = await _job_rows(res, video_id)
            assert row.sent_at is None
            await logged(worker, "lost its channel")
    finally:
        await asyncio.to_thread(rabbit.start_app)

    video = await state_in(res, video_id, {"ready", "failed"}, within=90)
    assert video.state == "ready", video.error

    async def recorded() -> JobRow | None:
        (row,) = await _job_rows(res, video_id)
        return row if row.outcome == "succeeded" else None

    row = await eventually(recorded, within=15, what="the job to be recorded succeeded")
    assert row.sent_at is not None and row.worker_mode == mode
    async with httpx.AsyncClient(timeout=10) as client:

        async def broker_up() -> bool:
            return (await _readiness(client, upload)).get("rabbitmq") == "ok"

        await eventually(broker_up, within=15, what="the upload service to see it back")
    for proc in (upload, worker):
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.log()[-3000:]}"


async def test_an_older_versions_classic_queue_hands_its_jobs_to_the_quorum_queue() -> None:
    topology = Topology(f"upgrade-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect(AMQP_URL)
    try:
        # What an older version declared: a classic jobs queue, holding three jobs.
        channel = await connection.channel()
        exchange = await channel.declare_exchange(topology.jobs_exchange, durable=True)
        legacy = await channel.declare_queue(topology.legacy_jobs_queue, durable=True)
        await legacy.bind(exchange, JOB_ROUTING_KEY)
        for n in range(3):
            old = aio_pika.Message(b"{}", message_id=f"old-{n}")
            await exchange.publish(old, routing_key=JOB_ROUTING_KEY)

        broker = Broker(AMQP_URL, topology)
        await broker.connect()
        try:
            moved = await channel.declare_queue(topology.jobs_queue, passive=True)
            assert moved.declaration_result.message_count == 3
            ids = set()
            while (message := await moved.get(no_ack=True, fail=False)) is not None:
                ids.add(message.message_id)
            assert ids == {"old-0", "old-1", "old-2"}
            with pytest.raises(ChannelNotFoundEntity):
                probe = await connection.channel()
                await probe.declare_queue(topology.legacy_jobs_queue, passive=True)
        finally:
            await delete_topology(broker.connection, topology)
            await broker.close()
    finally:
        await connection.close()
