"""What every hostile-input test checks: the refusal, its cost, and that nothing was kept.

``refused`` asserts the status and the JSON error body. ``Leftovers`` counts what a request
could have left behind (stored objects, database rows, queued jobs, Redis keys) so a test can
take it before and after. ``cheap`` times a hostile request while a normal one runs beside
it, for the attacks whose danger is their cost.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from shared.mq.depth import sample_depth
from shared.runtime.resources import Resources
from shared.storage.filesystem import FilesystemStore

# The budget of a refusal, and of the delay it may add to a concurrent normal request.
BUDGET_SECONDS = 0.050
TABLES = ("videos", "renditions", "transcode_jobs", "uploads")
REDIS_PATTERN = "vsp:*"


def refused(
    response: httpx.Response, status: int, *, error: str | None = None, mentions: str = ""
) -> dict[str, Any]:
    """Assert a JSON error answer with ``status``; return its body."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    if mentions:
        assert mentions.lower() in body["detail"].lower(), body
    return body


@dataclass(frozen=True)
class Leftovers:
    """Counts of everything a request could leave behind."""

    objects: int
    rows: dict[str, int]
    queued: int
    redis_keys: int

    @classmethod
    async def take(cls, res: Resources) -> Leftovers:
        store = res.need_store()
        if isinstance(store, FilesystemStore):
            # Every file, temporary and multipart parts included, not only finished objects.
            objects = sum(len(files) for _, _, files in os.walk(store.root))
        else:
            objects = len(await store.list(""))
        rows: dict[str, int] = {}
        async with res.need_db().session() as session:
            for table in TABLES:
                rows[table] = int(
                    (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                )
            # A job a relay has yet to publish counts as queued already: an earlier test's
            # upload published a moment later is then not this test's leftover.
            unsent = (
                await session.execute(
                    text("SELECT count(*) FROM transcode_jobs WHERE sent_at IS NULL")
                )
            ).scalar_one()
        depth = await sample_depth(res.need_broker())
        queued = sum(messages for messages, _ in depth.values()) + int(unsent)
        redis_keys = 0
        if res.redis is not None:
            async for _ in res.redis.scan_iter(match=REDIS_PATTERN, count=1000):
                redis_keys += 1
        return cls(objects, rows, queued, redis_keys)


async def assert_nothing_kept(res: Resources, before: Leftovers) -> None:
    """Fail when objects, rows, queued jobs or Redis keys grew since ``before``."""
    after = await Leftovers.take(res)
    assert after.objects <= before.objects, ("objects kept", before, after)
    for table, count in after.rows.items():
        assert count <= before.rows[table], (f"rows kept in {table}", before, after)
    assert after.queued <= before.queued, ("jobs queued", before, after)
    assert after.redis_keys <= before.redis_keys, ("Redis keys kept", before, after)


@dataclass(frozen=True)
class Cost:
    hostile_seconds: float
    normal_alone_seconds: float
    normal_beside_seconds: float

    @property
    def delay_seconds(self) -> float:
        return self.normal_beside_seconds - self.normal_alone_seconds


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _record(call: Callable[[], Any], into: list[float]) -> None:
    into.append(_timed(call)[0])


def cheap(
    hostile: Callable[[], httpx.Response],
    normal: Callable[[], httpx.Response],
    *,
    rounds: int = 5,
) -> tuple[Cost, httpx.Response]:
    """Time ``hostile`` while ``normal`` runs beside it, against ``normal`` alone.

    Each round starts the normal request on a thread, then sends the hostile one. Medians over
    ``rounds`` keep one scheduler hiccup on a busy machine from deciding the result. Assert
    with ``assert_cheap``.
    """
    alone: list[float] = []
    beside: list[float] = []
    hostile_times: list[float] = []
    last: httpx.Response | None = None
    for _ in range(rounds):
        alone.append(_timed(normal)[0])
        normal_time: list[float] = []
        thread = threading.Thread(target=_record, args=(normal, normal_time))
        thread.start()
        seconds, last = _timed(hostile)
        thread.join()
        hostile_times.append(seconds)
        beside.append(normal_time[0])
    assert last is not None
    cost = Cost(
        statistics.median(hostile_times), statistics.median(alone), statistics.median(beside)
    )
    return cost, last


def assert_cheap(cost: Cost, budget: float = BUDGET_SECONDS) -> None:
    """The refusal came within ``budget`` and delayed a concurrent request by less than it."""
    assert cost.hostile_seconds < budget, cost
    assert cost.delay_seconds < budget, cost
