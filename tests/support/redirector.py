"""The redirector's tests: a cluster of redirectors on the session's database, and its answers."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from services.redirector.service import listen_dsn
from tests.support.metrics import metric
from tests.support.polling import wait_for
from tests.support.processes import Proc, Processes

ADMIN_TOKEN = "redirector-test-admin-token"


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def empty_config_table(database_url: str) -> None:
    """Delete the stored configuration: redirectors started next use their environment's."""

    async def run() -> None:
        conn = await asyncpg.connect(listen_dsn(database_url))
        try:
            await conn.execute("DELETE FROM redirector_config")
        finally:
            await conn.close()

    asyncio.run(run())


def start_redirectors(
    procs: Processes, count: int, env: dict[str, str] | None = None
) -> list[Proc]:
    """``count`` redirector processes on free ports, started together, each ready."""
    started = [
        procs.service(
            "redirector",
            env={
                "REDIRECTOR_INSTANCE_ID": f"redirector-{n}",
                "REDIRECTOR_ADMIN_TOKEN": ADMIN_TOKEN,
                **(env or {}),
            },
            wait=False,
        )
        for n in range(1, count + 1)
    ]
    for n, proc in enumerate(started, start=1):
        proc.wait_ready(timeout=60)
        # Ready answers before the instance LISTENs for changes; a change posted to another
        # instance meanwhile would reach this one only when its listener catches up.
        wait_for(
            lambda proc=proc: listener_up(proc.url),
            timeout=60,
            what=f"redirector-{n} to listen for configuration changes",
        )
    return started


def listener_up(url: str) -> bool:
    """Whether the instance at ``url`` is subscribed to configuration changes."""
    return metric(url, "redirector_config_listener_up") == 1


def sides(client: httpx.Client, url: str, video: str, count: int, origin_prefix: str) -> list[str]:
    """Ask ``count`` times in a row; 'origin' or 'cdn' per answer."""
    out = []
    for _ in range(count):
        response = client.get(url, params={"video": video})
        assert response.status_code == 302, response.text
        out.append("origin" if response.headers["location"].startswith(origin_prefix) else "cdn")
    return out
