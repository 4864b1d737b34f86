"""The one app factory every HTTP service is built with.

It owns the lifespan (clients opened once, closed once), the error handler, request-id and
metrics middleware, the ``/healthz``, ``/readyz`` and ``/metrics`` endpoints, and the OpenAPI
document's error answers (``shared.http.openapi``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.core.errors import AppError
from shared.core.settings import BaseServiceSettings
from shared.http.faults import FaultDelayMiddleware, FaultState, fault_router
from shared.http.middleware import MetricsMiddleware, RequestIdMiddleware
from shared.http.openapi import document_errors
from shared.runtime.resources import Resources, close_resources, open_resources, readiness

log = logging.getLogger(__name__)

Hook = Callable[[FastAPI, Resources], Awaitable[None]]


JSON = "application/json"


def _json(content: object) -> bytes:
    # As FastAPI's JSONResponse renders it: compact, UTF-8.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def error_body(exc: AppError) -> bytes:
    """The JSON bytes of an error answer: ``{"error": code, "detail": ...}`` plus its extras."""
    return _json(exc.body())


def error_response(
    status: int, code: str, detail: object, headers: dict[str, str] | None = None
) -> Response:
    """The JSON error answer every service returns, for errors outside the domain tree."""
    body = _json({"error": code, "detail": detail})
    return Response(body, status_code=status, headers=headers, media_type=JSON)


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
    version: str = "0.1.0",
) -> FastAPI:
    """Build a service: its routers plus the platform's lifespan, errors and endpoints."""

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
                app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
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
