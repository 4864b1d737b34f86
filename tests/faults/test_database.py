"""PostgreSQL restarted or down under a running service: no request fails for a dead connection.

The database is a ``PrivatePostgres`` of the test's own, so stopping it disturbs nobody else.
"""

from __future__ import annotations

import httpx

from tests.support.infra import PrivatePostgres
from tests.support.polling import wait_for
from tests.support.processes import Processes


def test_a_database_restart_costs_no_request_and_an_outage_is_a_503(
    procs: Processes, private_postgres: PrivatePostgres
) -> None:
    origin = procs.service("origin", env={"DATABASE_URL": private_postgres.url}).url
    catalog = f"{origin}/api/videos"
    for _ in range(3):
        assert httpx.get(catalog, timeout=10).status_code == 200

    # The pooled connections die with the server; the first request after it is back draws one.
    private_postgres.stop()
    private_postgres.start()
    after = httpx.get(catalog, timeout=10)
    assert after.status_code == 200, after.text

    private_postgres.stop()
    ready = httpx.get(f"{origin}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["database"] == "down"
    assert ready.json()["checks"]["redis"] == "ok"
    assert httpx.get(f"{origin}/healthz", timeout=10).status_code == 200  # liveness holds
    down = httpx.get(catalog, timeout=10)
    assert down.status_code == 503, down.text
    assert down.json()["error"] == "service_unavailable" and down.headers["retry-after"]

    private_postgres.start()
    wait_for(
        lambda: httpx.get(f"{origin}/readyz", timeout=10).status_code == 200,
        timeout=30,
        what="the origin to be ready again",
    )
    assert httpx.get(catalog, timeout=10).status_code == 200
