"""Must show 1: a backend made slow loses its traffic within seconds and wins it back after.

Two balancers front the same three origins side by side under the same load: the tiered one
and a round-robin one, so the p95 comparison is made in one run under the same conditions.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from shared.runtime.resources import Resources
from tests.support.balancer import Load, backend_row, p95, set_delay, share, start_cluster
from tests.support.paths import ROOT
from tests.support.processes import Processes
from tests.support.signing import signed_path
from tests.support.storage import put_random

SLOW = "b0"
DELAY_SECONDS = 0.25
WARM_SECONDS = 5
SLOW_SECONDS = 8
STEER_WITHIN_SECONDS = 5


async def test_slow_backend_loses_traffic_then_wins_it_back(
    procs: Processes, res: Resources
) -> None:
    cluster = start_cluster(
        procs, 3, {"tiered": {"strategy": "tiered"}, "round_robin": {"strategy": "round_robin"}}
    )
    key = f"videos/{uuid.uuid4()}/hls/720p/seg_00000.m4s"
    body = await put_random(res.need_store(), key, 64 * 1024)
    tiered = Load(cluster.balancers["tiered"], signed_path(key), body, workers=4)
    round_robin = Load(cluster.balancers["round_robin"], signed_path(key), body, workers=4)
    tiered.start()
    round_robin.start()
    try:
        await asyncio.sleep(WARM_SECONDS)
        slow_from = time.monotonic()
        await asyncio.to_thread(set_delay, cluster.backends[SLOW], DELAY_SECONDS)
        await asyncio.sleep(SLOW_SECONDS)
        row = await asyncio.to_thread(backend_row, cluster.balancers["tiered"], SLOW)
        slow_until = time.monotonic()
        await asyncio.to_thread(set_delay, cluster.backends[SLOW], 0)
        recovered_after = None
        while time.monotonic() - slow_until < 20:
            await asyncio.sleep(1)
            recent = tiered.between(time.monotonic() - 2, time.monotonic())
            if len(recent) > 20 and share(recent, SLOW) >= 0.15:
                recovered_after = time.monotonic() - slow_until
                break
    finally:
        await tiered.stop()
        await round_robin.stop()

    before = tiered.between(slow_from - WARM_SECONDS + 1, slow_from)
    # Per second after the delay began: the slow backend's share through the tiered balancer.
    per_second = [
        share(tiered.between(slow_from + s, slow_from + s + 1), SLOW) for s in range(SLOW_SECONDS)
    ]
    steered = tiered.between(slow_from + STEER_WITHIN_SECONDS, slow_until)
    slow_tiered = tiered.between(slow_from, slow_until)
    slow_rr = round_robin.between(slow_from, slow_until)
    report = {
        "delay_seconds": DELAY_SECONDS,
        "slow_share_per_second_tiered": [round(s, 3) for s in per_second],
        "slow_share_after_5s_tiered": round(share(steered, SLOW), 4),
        "slow_share_round_robin": round(share(slow_rr, SLOW), 4),
        "p95_ms_tiered": round(p95(slow_tiered) * 1000, 1),
        "p95_ms_round_robin": round(p95(slow_rr) * 1000, 1),
        "requests_tiered": len(slow_tiered),
        "requests_round_robin": len(slow_rr),
        "slow_share_before": round(share(before, SLOW), 3),
        "recovered_after_seconds": recovered_after and round(recovered_after, 1),
    }
    print(json.dumps(report))
    out = Path(ROOT) / "results"
    out.mkdir(exist_ok=True)
    (out / "balancer_steering_test.json").write_text(json.dumps(report, indent=2))
    failures = [o for o in tiered.outcomes + round_robin.outcomes if not o.ok]
    assert not failures, failures[:5]
    assert share(before, SLOW) > 0.1, "with all backends well, the slow one had its share"
    assert share(steered, SLOW) < 0.10, per_second
    assert row["response_time_ms"] > DELAY_SECONDS * 1000 * 0.5, row
    assert share(slow_rr, SLOW) > 0.25, "round robin keeps sending the slow backend its third"
    assert p95(slow_tiered) < p95(slow_rr)
    assert recovered_after is not None, "the backend won its share back after the delay ended"
