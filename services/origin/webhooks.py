"""Webhooks API: an account's URLs for its videos' events, their secrets and delivery logs.

Every route needs an account and sees only that account's webhooks: another account's id
answers 404, as an unknown one does. A URL is checked before it is stored, its host resolved
and every address checked (``shared.http.targets``); a refused one is a 422 saying why. The
signing secret appears only in the answers that create or rotate it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.origin.settings import Settings
from services.origin.webhook_dispatcher import policy_of
from shared.core.errors import Conflict, NotFound
from shared.db.models import User, Webhook, WebhookAttempt, WebhookDelivery
from shared.http.app import resources
from shared.http.auth import RequiredPrincipal
from shared.http.signin import NO_STORE
from shared.http.targets import MAX_URL_CHARS, TargetRefused, parse_target, resolve_target
from shared.runtime.resources import Resources
from shared.videos.metadata import check_text
from shared.videos.webhooks import EVENTS, DeliveryState, EventName, new_secret

Res = Annotated[Resources, Depends(resources)]
DESCRIPTION_MAX_CHARS = 200
DELIVERIES_PAGE_MAX = 100
# Beyond any real log: a larger offset is a 422, not a costly scan.
DELIVERIES_OFFSET_MAX = 100_000


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_CHARS, description="https:// URL the events are sent to")
    events: list[EventName] = Field(min_length=1, max_length=len(EVENTS))
    description: str = Field(default="", max_length=DESCRIPTION_MAX_CHARS)


class WebhookEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=len(EVENTS))
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX_CHARS)
    active: bool | None = None


class WebhookInfo(BaseModel):
    """A webhook as its owner sees it later: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: datetime
    updated_at: datetime


class NewWebhook(WebhookInfo):
    secret: str = Field(description="The signing secret, shown this once (docs/WEBHOOKS.md)")


class WebhookSecret(BaseModel):
    id: uuid.UUID
    secret: str = Field(description="The new signing secret, shown this once")


class WebhookList(BaseModel):
    items: list[WebhookInfo]


class AttemptInfo(BaseModel):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime


class DeliveryInfo(BaseModel):
    id: uuid.UUID = Field(description="Sent as Webhook-Id on every attempt")
    event: str
    video_id: uuid.UUID | None
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="None once succeeded or failed")
    created_at: datetime
    finished_at: datetime | None
    log: list[AttemptInfo]


class DeliveryPage(BaseModel):
    items: list[DeliveryInfo]
    total: int
    limit: int
    offset: int


def _settings(res: Resources) -> Settings:
    assert isinstance(res.settings, Settings)
    return res.settings


async def checked_url(res: Resources, url: str) -> str:
    """``url`` once its syntax and every address of its host may be called; else a 422."""
    policy = policy_of(_settings(res))
    try:
        await resolve_target(parse_target(url, policy), policy)
    except TargetRefused as exc:
        raise RequestValidationError(
            [{"loc": ("body", "url"), "msg": str(exc), "type": "value_error.url_refused"}]
        ) from None
    return url


def _events(events: list[EventName]) -> list[str]:
    return list(dict.fromkeys(events))


async def _own(session: AsyncSession, owner_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or webhook.owner_id != owner_id:
        raise NotFound(f"webhook {webhook_id} does not exist")
    return webhook


def _info(webhook: Webhook) -> WebhookInfo:
    return WebhookInfo.model_validate(webhook)


def router() -> APIRouter:
    """The webhooks API."""
    api = APIRouter(tags=["webhooks"])

    @api.post("/api/webhooks", response_model=NewWebhook, status_code=201)
    async def create_webhook(
        body: WebhookCreate, principal: RequiredPrincipal, res: Res, response: Response
    ) -> object:
        """Register a URL for events of the caller's videos; the answer holds its secret."""
        description = check_text("description", body.description, DESCRIPTION_MAX_CHARS)
        url = await checked_url(res, body.url)
        limit = _settings(res).webhook_max_per_account
        async with res.need_db().session() as session:
            # One account's creations in turn, so two at once cannot pass the limit together.
            await session.execute(
                select(User.id).where(User.id == principal.user_id).with_for_update()
            )
            count = await session.scalar(
                select(func.count())
                .select_from(Webhook)
                .where(Webhook.owner_id == principal.user_id)
            )
            if (count or 0) >= limit:
                raise Conflict(f"an account may have at most {limit} webhooks; delete one first")
            webhook = Webhook(
                owner_id=principal.user_id,
                url=url,
                events=_events(body.events),
                description=description,
                secret=new_secret(),
                active=True,
            )
            session.add(webhook)
            await session.flush()
            await session.refresh(webhook)
        response.headers.update(NO_STORE)
        return NewWebhook(**_info(webhook).model_dump(), secret=webhook.secret)

    @api.get("/api/webhooks", response_model=WebhookList)
    async def list_webhooks(principal: RequiredPrincipal, res: Res) -> object:
        """The caller's webhooks, oldest first; never their secrets."""
        async with res.need_db().session() as session:
            rows = await session.scalars(
                select(Webhook)
                .where(Webhook.owner_id == principal.user_id)
                .order_by(Webhook.created_at, Webhook.id)
            )
            return WebhookList(items=[_info(w) for w in rows])

    @api.get("/api/webhooks/{webhook_id}", response_model=WebhookInfo)
    async def get_webhook(webhook_id: uuid.UUID, principal: RequiredPrincipal, res: Res) -> object:
        """One of the caller's webhooks."""
        async with res.need_db().session() as session:
            return _info(await _own(session, principal.user_id, webhook_id))

    @api.patch("/api/webhooks/{webhook_id}", response_model=WebhookInfo)
    async def edit_webhook(
        webhook_id: uuid.UUID, body: WebhookEdit, principal: RequiredPrincipal, res: Res
    ) -> object:
        """Change a webhook's URL, events, description, or pause it (``active``: false);
        deliveries wait while it is paused."""
        url = await checked_url(res, body.url) if body.url is not None else None
        description = (
            check_text("description", body.description, DESCRIPTION_MAX_CHARS)
            if body.description is not None
            else None
        )
        async with res.need_db().session() as session:
            webhook = await _own(session, principal.user_id, webhook_id)
            if url is not None:
                webhook.url = url
            if body.events is not None:
                webhook.events = _events(body.events)
            if description is not None:
                webhook.description = description
            if body.active is not None:
                webhook.active = body.active
            await session.flush()
            await session.refresh(webhook)
            return _info(webhook)

    @api.delete("/api/webhooks/{webhook_id}", status_code=204)
    async def delete_webhook(
        webhook_id: uuid.UUID, principal: RequiredPrincipal, res: Res
    ) -> Response:
        """Delete a webhook with its pending deliveries and its log."""
        async with res.need_db().session() as session:
            await session.delete(await _own(session, principal.user_id, webhook_id))
        return Response(status_code=204)

    @api.post("/api/webhooks/{webhook_id}/rotate", response_model=WebhookSecret)
    async def rotate_secret(
        webhook_id: uuid.UUID, principal: RequiredPrincipal, res: Res, response: Response
    ) -> object:
        """A new signing secret, used from the next attempt on; the old one stops at once."""
        async with res.need_db().session() as session:
            webhook = await _own(session, principal.user_id, webhook_id)
            webhook.secret = new_secret()
        response.headers.update(NO_STORE)
        return WebhookSecret(id=webhook_id, secret=webhook.secret)

    @api.get("/api/webhooks/{webhook_id}/deliveries", response_model=DeliveryPage)
    async def list_deliveries(
        webhook_id: uuid.UUID,
        principal: RequiredPrincipal,
        res: Res,
        limit: Annotated[int, Query(ge=1, le=DELIVERIES_PAGE_MAX)] = 20,
        offset: Annotated[int, Query(ge=0, le=DELIVERIES_OFFSET_MAX)] = 0,
    ) -> object:
        """The webhook's deliveries, newest first, each with every attempt made."""
        async with res.need_db().session() as session:
            await _own(session, principal.user_id, webhook_id)
            return await _deliveries(session, webhook_id, limit, offset)

    return api


async def _deliveries(
    session: AsyncSession, webhook_id: uuid.UUID, limit: int, offset: int
) -> DeliveryPage:
    mine = WebhookDelivery.webhook_id == webhook_id
    total = await session.scalar(select(func.count()).select_from(WebhookDelivery).where(mine))
    deliveries = (
        await session.scalars(
            select(WebhookDelivery)
            .where(mine)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(limit)
            .offset(offset)
        )
    ).all()
    attempts = (
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.attempt, WebhookAttempt.id)
        )
    ).all()
    logs: dict[uuid.UUID, list[AttemptInfo]] = {}
    for a in attempts:
        logs.setdefault(a.delivery_id, []).append(
            AttemptInfo(
                attempt=a.attempt,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
                at=a.created_at,
            )
        )
    items = [
        DeliveryInfo(
            id=d.id,
            event=d.event,
            video_id=d.video_id,
            state=DeliveryState(d.state),
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.state == DeliveryState.pending.value else None,
            created_at=d.created_at,
            finished_at=d.finished_at,
            log=logs.get(d.id, []),
        )
        for d in deliveries
    ]
    return DeliveryPage(items=items, total=int(total or 0), limit=limit, offset=offset)
