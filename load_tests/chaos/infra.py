"""Stopping and starting the machine's RabbitMQ, PostgreSQL and Redis, as an operator would.

The start commands are the ones ``vsp up`` prints when a dependency is missing
(``services.cli.up.START_HINTS``). ``ensure_running`` starts whatever is down: a chaos run ends
with it whatever happened, Ctrl-C included.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aio_pika

from services.cli.up import START_HINTS
from shared.core.settings import BaseServiceSettings

COMMAND_TIMEOUT_SECONDS = 120


def sh(command: list[str] | str, *, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
    """Run a command (a string runs in the shell); its output, or RuntimeError saying why not."""
    done = subprocess.run(
        command,
        shell=isinstance(command, str),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _succeeds(command: list[str]) -> bool:
    try:
        sh(command, timeout=30)
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return True


def _redis_cli(*args: str) -> list[str]:
    url = urlsplit(BaseServiceSettings().redis_url)
    return ["redis-cli", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379), *args]


def _pg_ctlcluster(action: str) -> list[str]:
    # The one cluster `vsp up` tells operators to start: `$(ls /etc/postgresql)` main.
    version = sh("ls /etc/postgresql").split()[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]


def stop_rabbitmq() -> None:
    sh(["rabbitmqctl", "stop_app"])


def start_rabbitmq() -> None:
    sh(["rabbitmqctl", "start_app"])


def stop_postgresql() -> None:
    sh(_pg_ctlcluster("stop"))


def start_postgresql() -> None:
    sh(START_HINTS["PostgreSQL"])


def stop_redis() -> None:
    # Redis answers SHUTDOWN by closing the connection, which redis-cli may report as an error.
    subprocess.run(_redis_cli("shutdown", "nosave"), capture_output=True, timeout=30, check=False)
    _wait(lambda: not redis_running(), "Redis to stop")


def start_redis() -> None:
    sh(START_HINTS["Redis"])
    _wait(redis_running, "Redis to start")


def rabbitmq_running() -> bool:
    return _succeeds(["rabbitmqctl", "await_startup", "--timeout", "5"])


def postgresql_running() -> bool:
    return _succeeds(_pg_ctlcluster("status"))


def redis_running() -> bool:
    try:
        return sh(_redis_cli("ping"), timeout=10).strip() == "PONG"
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def ensure_running() -> list[str]:
    """Start RabbitMQ, PostgreSQL and Redis where they are down; what had to be started."""
    started = []
    if not rabbitmq_running():
        try:
            start_rabbitmq()  # the node runs, its application was stopped
        except RuntimeError:
            sh(START_HINTS["RabbitMQ"])  # the node itself is down
            _wait(rabbitmq_running, "RabbitMQ to start", timeout=120)
        started.append("RabbitMQ")
    if not postgresql_running():
        start_postgresql()
        started.append("PostgreSQL")
    if not redis_running():
        start_redis()
        started.append("Redis")
    return started


async def delete_queues(prefix: str) -> int:
    """Delete every queue whose name starts with ``<prefix>.`` (the edges' queues included)."""
    listed = sh(["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"])
    names = [name for name in listed.split() if name.startswith(f"{prefix}.")]
    connection = await aio_pika.connect(BaseServiceSettings().amqp_url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()
    return len(names)
