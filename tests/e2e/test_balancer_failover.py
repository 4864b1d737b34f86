"""Must show 2: a backend killed mid-test costs only the responses it was streaming.

It is ejected, and once it is back and passes its health checks it is re-admitted on slow
start and takes traffic again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from shared.runtime.resources import Resources
from tests.support.balancer import Load, backend_row, start_backend, start_cluster, stats
from tests.support.polling import wait_for
from tests.support.processes import Processes
from tests.support.signing import signed_path
from tests.support.storage import put_random

VICTIM = "b1"


async def test_killed_backend_is_ejected_and_readmitted(procs: Processes, res: Resources) -> None:
    cluster = start_cluster(
        procs,
        3,
        {
            "lb": {
                "scrape_interval_seconds": 0.5,
                "health_interval_seconds": 0.5,
                "eject_after_failures": 2,
                "slow_start_seconds": 2,
            }
        },
    )
    lb = cluster.balancers["lb"]
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00001.m4s"
    body = await put_random(res.need_store(), key, 1024 * 1024)
    load = Load(lb, signed_path(key), body, workers=6)
    load.start()
    try:
        await asyncio.sleep(2)
        killed_at = time.monotonic()
        # The whole process group, as a crash of the backend's container would take it: a
        # server with worker processes would otherwise keep serving from an orphaned worker.
        victim = cluster.procs[VICTIM].popen
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()

        def ejected() -> bool:
            return backend_row(lb, VICTIM)["state"] == "ejected"

        try:
            await asyncio.to_thread(wait_for, ejected, timeout=10, what=f"{VICTIM} ejected")
        except TimeoutError:
            raise AssertionError(f"not ejected: {stats(lb)}") from None
        ejected_after = time.monotonic() - killed_at
        await asyncio.sleep(1.5)
        during = load.between(killed_at + ejected_after, time.monotonic())

        port = cluster.backends[VICTIM].rsplit(":", 1)[1]
        await asyncio.to_thread(start_backend, procs, int(port))
        restarted_at = time.monotonic()

        def readmitted() -> bool:
            return backend_row(lb, VICTIM)["state"] == "healthy"

        await asyncio.to_thread(wait_for, readmitted, timeout=15, what=f"{VICTIM} re-admitted")

        def serving_again() -> bool:
            return any(o.backend == VICTIM and o.ok for o in load.between(restarted_at, 1e12))

        await asyncio.to_thread(wait_for, serving_again, timeout=15, what=f"{VICTIM} serving")
    finally:
        await load.stop()

    failed = [o for o in load.outcomes if not o.ok]
    # The only casualties: responses that were already streaming from the victim when it died.
    for outcome in failed:
        assert outcome.backend == VICTIM and outcome.status == 200, outcome
        assert outcome.started < killed_at < outcome.finished, outcome
    assert len(failed) <= load.workers
    assert all(o.backend != VICTIM for o in during), "no traffic to an ejected backend"
    assert len([o for o in load.outcomes if o.ok]) > 50
    final = stats(lb)
    row = next(b for b in final["backends"] if b["name"] == VICTIM)
    assert row["ejections_total"] == 1
    assert final["totals"]["backends_up"] == 3
    print(
        f"failed={len(failed)} of {len(load.outcomes)}, ejected after {ejected_after:.2f}s, "
        f"retries={final['totals']['retries_total']}"
    )
