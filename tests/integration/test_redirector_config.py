"""The redirector's configuration on the real PostgreSQL: fallback, NOTIFY, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from services.redirector.repository import ROW_ID
from services.redirector.schemas import ConfigUpdate
from services.redirector.service import Redirector, listen_dsn
from services.redirector.settings import Settings
from shared.core.errors import UpstreamUnavailable
from shared.db.engine import Database

VIDEO = "http://s1.origin-cluster/v/1.m3u8"


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "redirector_cdn_host": "env-cdn.example",
        "redirector_ratio": 4,
        "redirector_reconnect_seconds": 0.2,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def empty_table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM redirector_config")
    finally:
        await conn.close()


async def until(predicate: Callable[[], bool], within: float) -> float:
    """Seconds until ``predicate`` held; fails after ``within`` seconds."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            pytest.fail(f"not true within {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
async def instances(test_env: dict[str, str]) -> AsyncIterator[list[Redirector]]:
    """Two started redirectors on the session database, whose config table starts empty."""
    settings = make_settings()
    await empty_table(listen_dsn(settings.database_url))
    started = []
    for _ in range(2):
        r = Redirector(settings, Database(settings.database_url, pool_size=2))
        await r.start()
        started.append(r)
    await until(lambda: all(r.listening for r in started), 10)
    yield started
    for r in started:
        await r.stop()
        assert r.db is not None
        await r.db.close()


async def test_empty_table_means_the_environment(instances: list[Redirector]) -> None:
    for r in instances:
        assert (r.config.source, r.config.version) == ("environment", 0)
        assert (r.config.cdn_host, r.config.ratio) == ("env-cdn.example", 4)


async def test_a_change_reaches_the_other_instance_within_a_second(
    instances: list[Redirector],
) -> None:
    first, second = instances
    saved = await first.update(ConfigUpdate(cdn_host="cdn-a.example", ratio=3))
    assert (saved.version, saved.source) == (1, "database")
    # Fields left out keep the fallback's values (status code, sticky).
    assert (saved.status_code, saved.sticky) == (302, False)
    assert first.config == saved
    took = await until(lambda: second.config == saved, 1.0)
    assert took < 1.0
    assert second.redirect(VIDEO).location.startswith(("http://cdn-a.example/s1/", VIDEO))

    again = await second.update(ConfigUpdate(status_code=301, sticky=True))
    assert (again.version, again.cdn_host, again.ratio) == (2, "cdn-a.example", 3)
    await until(lambda: first.config == again, 1.0)


async def test_emptying_the_table_falls_back_everywhere(instances: list[Redirector]) -> None:
    first, second = instances
    await first.update(ConfigUpdate(ratio=9))
    await until(lambda: second.config.ratio == 9, 1.0)
    await second.reset()
    await until(lambda: first.config.source == "environment", 1.0)
    assert first.config.ratio == 4


async def test_listener_reconnects_and_catches_up(instances: list[Redirector]) -> None:
    first, second = instances
    dsn = listen_dsn(first.settings.database_url)
    admin = await asyncpg.connect(dsn)
    try:
        # A change the instances are not told about (no NOTIFY), as one committed while their
        # listeners are gone would be. Written before the cut, not after it: the listener may
        # be back within its 0.2 s reconnect delay, before a write that follows the cut lands.
        await admin.execute(
            "INSERT INTO redirector_config (id, cdn_host, ratio, status_code, sticky, version) "
            "VALUES ($1, 'missed.example', 6, 302, false, 41)",
            ROW_ID,
        )
        # Cut every LISTEN connection to this database, as a database restart would...
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        await until(lambda: not second.listening, 5)
        assert second.config.version != 41, "the instance knew of the change before it reconnected"
    finally:
        await admin.close()
    # ...is read when it reconnects.
    await until(lambda: second.listening, 5)
    await until(lambda: second.config.cdn_host == "missed.example", 2)
    assert second.config.version == 41


async def test_database_down_at_start_uses_the_environment(test_env: dict[str, str]) -> None:
    from tests.support.ports import free_port

    settings = make_settings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    )
    r = Redirector(settings, Database(settings.database_url, pool_size=1))
    try:
        await r.start()
        assert (r.config.source, r.config.cdn_host) == ("environment", "env-cdn.example")
        answers = [r.redirect(VIDEO).side for _ in range(8)]
        assert answers.count("origin") == 2
        with pytest.raises(UpstreamUnavailable):
            await r.update(ConfigUpdate(ratio=2))
        assert r.config.ratio == 4
    finally:
        await r.stop()
        assert r.db is not None
        await r.db.close()
