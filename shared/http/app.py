"""The one app factory every HTTP service is built with.

It owns the lifespan (clients opened once, closed once), the error handler, request-id and
metrics middleware, the service's concurrency caps (``shared.http.concurrency``), the
``/healthz``, ``/readyz`` and ``/metrics`` endpoints, and the OpenAPI document's error answers
(``shared.http.openapi``).

``/healthz`` is liveness: it answers while the process runs, whatever its dependencies do, so an
orchestrator never restarts a process for an outage elsewhere. ``/readyz`` is readiness: 503
while a dependency is down. A request that meets a lost database or Redis connection (after the
clients' own retries) is a 503 with Retry-After, not a 500.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.core.errors import AppError, ServiceUnavailable
from shared.core.settings import BaseServiceSettings
from shared.http.concurrency import Cap, ConcurrencyLimits, document_caps
from shared.http.errors import JSON, error_body, error_response
from shared.http.faults import FaultDelayMiddleware, FaultState, fault_router
from shared.http.middleware import MetricsMiddleware, RequestIdMiddleware
from shared.http.openapi import document_errors
from shared.runtime.resources import Resources, close_resources, open_resources, readiness

log = logging.getLogger(__name__)

Hook = Callable[[FastAPI, Resources], Awaitable[None]]


async def _app_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return Response(error_body(exc), status_code=exc.status, headers=exc.headers, media_type=JSON)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return error_response(422, "validation_error", errors)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred")


# A dependency lost for longer than its client retries: connection refused or reset, a pool
# with no connection to give, a database connection that died under a query.
_DEPENDENCY_ERRORS = (ConnectionError, RedisConnectionError, RedisTimeoutError, PoolTimeoutError)


def _dependency_down(
    retry_after_seconds: int,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(_: Request, exc: Exception) -> Response:
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
            raise exc
        log.warning("a dependency is unavailable: %s: %s", type(exc).__name__, exc)
        busy = ServiceUnavailable(
            "a dependency of this service is unavailable: retry later",
            headers={"Retry-After": str(retry_after_seconds)},
        )
        return await _app_error(_, busy)

    return handler


async def resources(request: Request) -> Resources:
    """FastAPI dependency: the process's clients (async: no thread-pool hop per request)."""
    res: Resources = request.app.state.resources
    return res


def create_app(
    *,
    service: str,
    settings: BaseServiceSettings,
    routers: Sequence[APIRouter] = (),
    uses: frozenset[str] | set[str] = frozenset(),
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    caps: Sequence[Cap] = (),
    version: str = "0.1.0",
) -> FastAPI:
    """Build a service: its routers plus the platform's lifespan, errors and endpoints.

    ``caps`` bound the requests of each kind the process serves at once.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = await open_resources(settings, uses)
        app.state.resources = res
        try:
            for hook in on_startup:
                await hook(app, res)
            log.info("%s ready", service)
            yield
        finally:
            for hook in on_shutdown:
                try:
                    await hook(app, res)
                except Exception:
                    log.exception("shutdown hook failed")
            await close_resources(res)

    app = FastAPI(title=f"vsp {service}", version=version, lifespan=lifespan)
    app.state.service = service

    def openapi() -> dict[str, Any]:
        # Built once, on first request, from every route the service has added by then.
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # Every method of a route gets the route's one operation id; made unique below.
                warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
                app.openapi_schema = document_errors(document_caps(FastAPI.openapi(app), caps))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    dependency_down = _dependency_down(settings.busy_retry_after_seconds)
    for error in (*_DEPENDENCY_ERRORS, DBAPIError):
        app.add_exception_handler(error, dependency_down)
    app.add_exception_handler(Exception, _unexpected)
    if caps:
        # Inside the request-id and metrics middleware, so refusals carry an id and are counted.
        retry_after = settings.busy_retry_after_seconds
        app.add_middleware(ConcurrencyLimits, caps=caps, retry_after_seconds=retry_after)
    if settings.fault_delay_seconds > 0 or settings.fault_admin_token:
        faults = FaultState(settings.fault_delay_seconds)
        app.state.faults = faults
        app.add_middleware(FaultDelayMiddleware, state=faults)
        app.include_router(fault_router(faults, settings.fault_admin_token))
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        checks = await readiness(request.app.state.resources)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "service": service, "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app
