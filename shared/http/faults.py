"""Fault injection for resilience tests: an added delay on every request, changeable at run time.

Off unless a service sets ``fault_delay_seconds`` above zero or a ``fault_admin_token``; then
``PUT /admin/fault`` with ``Authorization: Bearer <token>`` and ``{"delay_seconds": 0.3}`` changes
the delay while the process runs, so a test can make one backend slow and well again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.core.errors import NotFound
from shared.http.auth import bearer_token, check_admin_token

ADMIN_PATH = "/admin/fault"


@dataclass
class FaultState:
    """What the process is told to suffer right now."""

    delay_seconds: float = 0.0


class FaultDelayMiddleware:
    """Sleeps before handling each HTTP request while a delay is set."""

    def __init__(self, app: ASGIApp, state: FaultState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        delay = self.state.delay_seconds
        if delay > 0 and scope["type"] == "http" and scope["path"] != ADMIN_PATH:
            await asyncio.sleep(delay)
        await self.app(scope, receive, send)


class FaultChange(BaseModel):
    delay_seconds: float = Field(ge=0, le=60)


def fault_router(state: FaultState, token: str | None) -> APIRouter:
    """``GET``/``PUT /admin/fault``, refused unless the bearer token matches."""
    router = APIRouter(include_in_schema=False)

    def check(authorization: str | None) -> None:
        if not token:
            raise NotFound("fault injection is not enabled: FAULT_ADMIN_TOKEN is not set")
        check_admin_token(bearer_token(authorization), token, "fault injection")

    @router.get(ADMIN_PATH)
    async def show(authorization: Annotated[str | None, Header()] = None) -> dict[str, float]:
        check(authorization)
        return {"delay_seconds": state.delay_seconds}

    @router.put(ADMIN_PATH)
    async def change(
        body: FaultChange, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, float]:
        check(authorization)
        state.delay_seconds = body.delay_seconds
        return {"delay_seconds": state.delay_seconds}

    return router
