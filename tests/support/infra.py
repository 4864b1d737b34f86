"""The infrastructure tests run on: PostgreSQL databases, RabbitMQ topologies, the environment.

The session's PostgreSQL and RabbitMQ are the machine's own (tests/conftest.py gives the session
a database and a prefix of its own on them); ``PrivatePostgres`` is a throwaway cluster a test
may stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from shared.core.settings import BaseServiceSettings
from shared.db.migrate import upgrade
from shared.mq.broker import Broker
from shared.mq.messages import VideoEvent
from shared.mq.topology import Topology
from shared.runtime.resources import Resources
from tests.support.ports import free_port
from tests.support.processes import Processes

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(name: str) -> str:
    """The URL of database ``name`` on the machine's PostgreSQL, as the services take it."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(name: str) -> None:
    """Drop database ``name`` of the machine's PostgreSQL, whoever is still connected."""
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new database ``name``, migrated; its URL. It is dropped at the end of the block."""
    url = database_url(name)
    upgrade(url)
    try:
        yield url
    finally:
        asyncio.run(drop_database(name))


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def delete_topology(connection: Any, topology: Any) -> None:
    """Delete every queue and exchange of ``topology`` (the messages they hold go with them)."""
    channel = await connection.channel()
    try:
        levels = range(1, len(topology.retry_delays_seconds) + 1)
        for queue in [topology.jobs_queue, topology.dead_queue]:
            await channel.queue_delete(queue)
        for queue in (topology.retry_queue(level) for level in levels):
            await channel.queue_delete(queue)
        for exchange in (
            topology.jobs_exchange,
            topology.retry_exchange,
            topology.dead_exchange,
            topology.events_exchange,
        ):
            await channel.exchange_delete(exchange)
    finally:
        await channel.close()


async def drop_topology(prefix: str, retry_levels: int = 3) -> None:
    """Delete the queues and exchanges a broker declares for ``prefix``."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    try:
        await delete_topology(connection, Topology(prefix, (1,) * retry_levels))
    finally:
        await connection.close()


@contextmanager
def private_queues(name: str) -> Iterator[dict[str, str]]:
    """Environment that gives services a broker topology of their own, deleted afterwards.

    For services that queue transcode jobs in a test that runs no worker: their jobs stay off
    the session's queue, where the worker of a later test would otherwise pick them up first.
    """
    prefix = f"{os.environ.get('MQ_PREFIX', 'vsp')}-{name}"
    try:
        yield {"MQ_PREFIX": prefix}
    finally:
        asyncio.run(drop_topology(prefix))


@contextlib.asynccontextmanager
async def own_queues(
    res: Resources, procs: Processes
) -> AsyncIterator[tuple[Resources, dict[str, str]]]:
    """Resources publishing to exchanges and queues of their own, and the environment for workers.

    The session's job queue is shared: jobs that other tests left there (uploads that became
    videos, retries still under way) would reach this test's workers, take their time and move
    their counters. Workers started with the returned environment consume only what is
    published through the returned resources. At the end the workers are stopped, then the
    exchanges and queues are deleted.
    """
    shared = res.need_broker()
    topology = Topology(
        f"{shared.topology.prefix}.{uuid.uuid4().hex[:8]}", shared.topology.retry_delays_seconds
    )
    broker = Broker(shared.url, topology, heartbeat_seconds=shared.heartbeat_seconds)
    await broker.connect()
    try:
        yield dataclasses.replace(res, broker=broker), {"MQ_PREFIX": topology.prefix}
    finally:
        procs.stop_all()
        try:
            await delete_topology(broker.connection, topology)
        finally:
            await broker.close()


def publish_event(event: VideoEvent) -> None:
    """Publish a video event on the session's exchange, as the transcoder does."""

    async def publish() -> None:
        settings = BaseServiceSettings()
        broker = Broker(
            settings.amqp_url, Topology(settings.mq_prefix, settings.mq_retry_delays_seconds)
        )
        await broker.connect()
        try:
            await broker.publish_event(event)
        finally:
            await broker.close()

    asyncio.run(publish())


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster a test may stop, unlike the shared one."""

    data_dir: Path
    port: int
    bin_dir: Path

    @classmethod
    def create(cls) -> PrivatePostgres:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        initdb = Path(shutil.which("initdb") or (bins[-1] if bins else "initdb"))
        root = Path(tempfile.mkdtemp(prefix="vsp-pg-"))
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        data = root / "data"
        subprocess.run(
            _as_postgres(
                [
                    str(initdb),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        db = cls(data, free_port(), initdb.parent)
        db.start()
        return db

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/vsp"

    def _pg_ctl(self, *args: str, check: bool) -> None:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        subprocess.run(_as_postgres(command), check=check, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data_dir} -c fsync=off"
        )
        log = str(self.data_dir / "server.log")
        self._pg_ctl("-o", options, "-l", log, "-w", "start", check=True)

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop", check=False)

    def migrate(self) -> None:
        upgrade(self.url)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)
