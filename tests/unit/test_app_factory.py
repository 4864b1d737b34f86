"""The shared app factory: errors, request ids, route-template metrics, health, fault admin."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi import APIRouter
from redis.asyncio import Redis

from shared.core.errors import Conflict, NotFound
from shared.core.settings import BaseServiceSettings
from shared.http.app import create_app
from shared.runtime.resources import Resources, readiness, redis_from_settings

router = APIRouter()


@router.get("/things/{thing_id}")
async def thing(thing_id: int) -> dict[str, int]:
    if thing_id == 404:
        raise NotFound("no such thing", thing_id=thing_id)
    if thing_id == 409:
        raise Conflict("busy")
    if thing_id == 500:
        raise RuntimeError("boom")
    if thing_id == 503:
        raise ConnectionRefusedError("the database at db:5432 refused the connection")
    return {"id": thing_id}


@pytest.fixture
async def client():  # type: ignore[no-untyped-def]
    app = create_app(service="t", settings=BaseServiceSettings(), routers=[router])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def test_domain_errors_render_as_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/things/404")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "no such thing", "thing_id": 404}
    r = await client.get("/things/409")
    assert (r.status_code, r.json()["error"]) == (409, "conflict")


async def test_validation_and_unknown_routes(client: httpx.AsyncClient) -> None:
    r = await client.get("/things/abc")
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    assert r.json()["detail"][0]["loc"] == ["path", "thing_id"]
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_unexpected_error_is_a_json_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/things/500")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "detail": "an unexpected error occurred"}


async def test_a_lost_dependency_is_a_503_with_retry_after(client: httpx.AsyncClient) -> None:
    r = await client.get("/things/503")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "service_unavailable"
    assert "db:5432" not in r.text  # the error itself goes to the log


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/things/1", headers={"X-Request-ID": "abc123"})
    assert r.headers["x-request-id"] == "abc123"
    r = await client.get("/things/1")
    assert len(r.headers["x-request-id"]) == 32


async def test_metrics_use_route_templates(client: httpx.AsyncClient) -> None:
    await client.get("/things/7")
    await client.get("/things/8")
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/things/{thing_id}",status="200"}' in text
    assert "/things/7" not in text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {}


async def test_readiness_names_a_dependency_that_is_down_but_not_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the client fails at once, as after a Redis restart.
    redis = Redis.from_url("redis://secret-user:secret-pass@127.0.0.1:1/0", socket_timeout=1)
    try:
        checks = await readiness(Resources(settings=BaseServiceSettings(), redis=redis))
    finally:
        await redis.aclose()
    assert checks == {"redis": "down"}
    assert "redis is down" in caplog.text


async def test_readiness_reports_a_hung_dependency_down_within_its_timeout() -> None:
    # A peer that takes connections and never answers, as a wedged Redis would.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        settings = BaseServiceSettings(
            redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
            redis_socket_timeout_seconds=30,
            readiness_timeout_seconds=0.5,
        )
        redis = redis_from_settings(settings)
        started = time.monotonic()
        try:
            checks = await readiness(Resources(settings=settings, redis=redis))
        finally:
            await redis.aclose()
    assert checks == {"redis": "down"}
    assert time.monotonic() - started < 5


async def test_fault_admin_needs_the_bearer_token() -> None:
    token = "fault-test-admin-token"
    settings = BaseServiceSettings(fault_admin_token=token)
    app = create_app(service="t", settings=settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            missing = await c.get("/admin/fault")
            malformed = await c.get("/admin/fault", headers={"Authorization": token})
            wrong = await c.get("/admin/fault", headers={"Authorization": "Bearer not-it"})
            right = {"Authorization": f"Bearer {token}"}
            changed = await c.put("/admin/fault", json={"delay_seconds": 0.01}, headers=right)
    for refused in (missing, malformed):
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert (wrong.status_code, wrong.json()["error"]) == (403, "forbidden")
    assert changed.json() == {"delay_seconds": 0.01}


async def test_fault_admin_without_a_token_is_not_there() -> None:
    app = create_app(service="t", settings=BaseServiceSettings(fault_delay_seconds=0.001))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/admin/fault", headers={"Authorization": "Bearer anything-at-all"})
    assert r.status_code == 404


def test_one_signer_per_process_and_no_outbox_unless_started() -> None:
    res = Resources(BaseServiceSettings())

    assert res.signer is res.signer
    with pytest.raises(RuntimeError):
        res.need_outbox()
