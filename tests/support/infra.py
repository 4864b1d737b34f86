"""The infrastructure tests run on: PostgreSQL databases, RabbitMQ topologies, the environment.

The session's PostgreSQL and RabbitMQ are the machine's own (tests/conftest.py gives the session
a database and a prefix of its own on them); ``PrivatePostgres`` is a throwaway cluster,
``PrivateRedis`` a throwaway Redis and ``PrivateRabbit`` a throwaway RabbitMQ node that a test
may stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from shared.db.migrate import upgrade
from shared.mq.broker import Broker
from shared.mq.topology import Topology
from shared.runtime.resources import Resources
from tests.support.polling import wait_for
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
    res: Resources, procs: Processes, *, delivery_limit: int | None = None
) -> AsyncIterator[tuple[Resources, dict[str, str]]]:
    """Resources publishing to exchanges and queues of their own, and the environment for workers.

    The session's job queue is shared: jobs that other tests left there (uploads that became
    videos, retries still under way) would reach this test's workers, take their time and move
    their counters. Workers started with the returned environment consume only what is
    published through the returned resources; ``delivery_limit`` sets the jobs queue's limit
    for them too. At the end the workers are stopped, then the exchanges and queues are
    deleted.
    """
    shared = res.need_broker()
    topology = dataclasses.replace(
        shared.topology,
        prefix=f"{shared.topology.prefix}.{uuid.uuid4().hex[:8]}",
        delivery_limit=delivery_limit or shared.topology.delivery_limit,
    )
    broker = Broker(shared.url, topology, heartbeat_seconds=shared.heartbeat_seconds)
    await broker.connect()
    env = {"MQ_PREFIX": topology.prefix, "MQ_DELIVERY_LIMIT": str(topology.delivery_limit)}
    try:
        yield dataclasses.replace(res, broker=broker), env
    finally:
        procs.stop_all()
        try:
            await delete_topology(broker.connection, topology)
        finally:
            await broker.close()


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


@dataclass
class PrivateRedis:
    """A throwaway redis-server (no persistence) a test may kill and start again on its port."""

    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls) -> PrivateRedis:
        log_dir = Path(tempfile.mkdtemp(prefix="vsp-redis-"))
        server = cls(free_port(), log_dir / "redis.log")
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> SyncRedis:
        """A plain client of this server, for the test's own commands."""
        return SyncRedis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        """Start the server and wait until it answers."""
        args = [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
        ]
        with self.log_path.open("ab") as log:
            popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.popen = popen

        def answers() -> bool:
            if popen.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text()}")
            try:
                with self.client() as client:
                    return bool(client.ping())
            except RedisError:
                return False

        wait_for(answers, timeout=30, interval=0.05, what=f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, as a crash: clients see their connections drop."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def clients(self) -> list[dict[str, str]]:
        """``CLIENT LIST``: one dict per connection (``name``, ``flags``, ``sub``, ``cmd``...)."""
        with self.client() as client:
            return list(client.client_list())

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)


def _rabbit_tool(name: str) -> str:
    # Debian's wrappers in /usr/sbin switch to the rabbitmq user and its HOME; the scripts they
    # wrap run as the caller with the environment a private node needs.
    script = Path("/usr/lib/rabbitmq/bin") / name
    return str(script) if script.exists() else shutil.which(name) or name


@dataclass
class PrivateRabbit:
    """A throwaway RabbitMQ node a test may stop and start, unlike the shared one.

    It has a node name, ports, data, logs and Erlang cookie (``HOME`` is its folder) of its
    own, and no plugins. Its AMQP listener is set in its rabbitmq.conf rather than by
    ``RABBITMQ_NODE_PORT``, which would add a second listener on the same port. ``config``
    adds rabbitmq.conf lines (``consumer_timeout``...); ``channel_tick_ms`` is how often its
    channels check their consumer timeout (60 s unless set). Starting takes about 5 s.
    """

    root: Path
    port: int
    dist_port: int
    node: str

    @classmethod
    def create(
        cls, *, config: dict[str, str] | None = None, channel_tick_ms: int | None = None
    ) -> PrivateRabbit:
        root = Path(tempfile.mkdtemp(prefix="vsp-rabbit-"))
        node = cls(root, free_port(), free_port(), f"vsp-test-{uuid.uuid4().hex[:8]}@localhost")
        lines = [f"listeners.tcp.local = 127.0.0.1:{node.port}", "loopback_users = none"]
        lines += [f"{key} = {value}" for key, value in (config or {}).items()]
        (root / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        rabbit = "" if channel_tick_ms is None else f"{{channel_tick_interval, {channel_tick_ms}}}"
        (root / "advanced.config").write_text(f"[{{rabbit, [{rabbit}]}}].\n")
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")
        try:
            node.start()
        except BaseException:
            node.destroy()
            raise
        return node

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        """The environment of the node and of the tools that control it."""
        return {
            **os.environ,
            "HOME": str(self.root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 120) -> str:
        """``rabbitmqctl -n NODE ARGS``: its output; raises when it fails."""
        done = subprocess.run(
            [_rabbit_tool("rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Start the node and wait until it accepts connections."""
        subprocess.run(
            [_rabbit_tool("rabbitmq-server"), "-detached"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.ctl("wait", str(self.root / "pid"), "--timeout", "120", timeout=150)

    def stop_app(self) -> None:
        """Stop RabbitMQ inside the running node: clients lose their connections."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")

    def destroy(self) -> None:
        pid_file = self.root / "pid"
        try:
            self.ctl("stop", str(pid_file), timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
