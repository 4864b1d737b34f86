"""The webhook dispatcher: sends due deliveries, retries failed ones, logs every attempt.

It runs in the origin process (started and stopped with the app, like the outbox relay in the
upload services), each origin running one; any number can run at once. A pass claims due rows
with ``FOR UPDATE SKIP LOCKED``, counts the attempt and moves the row's ``next_attempt_at`` a
lease ahead, then commits before sending: no transaction stays open across a slow receiver,
no two dispatchers send the same attempt, and an attempt lost with its dispatcher is made again
once the lease ends (at least once). Each attempt resolves the URL's host again, checks every
address (``shared.http.targets``) and connects to the checked one; redirects are not followed,
at most ``RESPONSE_READ_BYTES`` of the answer are read, and the whole attempt has
``TOTAL_TIMEOUT_SECONDS``. A 2xx is delivered; anything else is retried after
``WEBHOOK_RETRY_DELAYS_SECONDS`` (jittered) until ``WEBHOOK_MAX_ATTEMPTS``, then failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from services.origin.settings import Settings
from shared.core.tasks import cancel_and_wait
from shared.db.engine import Database
from shared.db.models import Webhook, WebhookAttempt, WebhookDelivery
from shared.http.app import Hook
from shared.http.targets import (
    TargetPolicy,
    TargetRefused,
    parse_networks,
    parse_target,
    pinned,
    resolve_target,
)
from shared.runtime.resources import Resources
from shared.videos.webhooks import DeliveryState, signed_headers

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
TOTAL_TIMEOUT_SECONDS = 10.0
# Longer than an attempt can last, so a claimed row is never claimed again while it is sent.
LEASE_SECONDS = 60.0
RESPONSE_READ_BYTES = 4096
ERROR_MAX_CHARS = 300
JITTER = 0.2
PRUNE_EVERY_SECONDS = 600.0
USER_AGENT = "vsp-webhooks/1"

DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, retrying or failed (out of attempts).",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "webhook_attempt_duration_seconds",
    "Time of one webhook delivery attempt, resolution and answer included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def policy_of(settings: Settings) -> TargetPolicy:
    """Which webhook URLs the settings let the origin call."""
    return TargetPolicy(
        allow_http=settings.webhook_allow_http,
        allowed_networks=parse_networks(settings.webhook_allowed_networks),
    )


def retry_delay_seconds(delays: Sequence[float], attempt: int) -> float:
    """The wait after failed attempt ``attempt`` (from 1): its delay (the last one repeats)
    within +-``JITTER``, so receivers that came back are not hit by every retry at once."""
    base = delays[min(attempt, len(delays)) - 1]
    return base * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt."""

    id: uuid.UUID
    attempt: int
    body: str
    url: str
    secret: str


@dataclass(frozen=True)
class Result:
    status_code: int | None
    error: str | None
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def claim(db: Database, *, limit: int) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of active webhooks for one attempt each."""
    lease_end = datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)
    async with db.session() as session:
        rows = (
            await session.execute(
                select(WebhookDelivery, Webhook.url, Webhook.secret)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(
                    WebhookDelivery.state == DeliveryState.pending.value,
                    WebhookDelivery.next_attempt_at <= datetime.now(UTC),
                    Webhook.active.is_(True),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(of=WebhookDelivery, skip_locked=True)
            )
        ).all()
        claimed = []
        for delivery, url, secret in rows:
            delivery.attempts += 1
            delivery.next_attempt_at = lease_end
            claimed.append(Claimed(delivery.id, delivery.attempts, delivery.body, url, secret))
    return claimed


async def _read_some(response: httpx.Response) -> None:
    """Read at most RESPONSE_READ_BYTES of the answer; the rest is never downloaded."""
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received >= RESPONSE_READ_BYTES:
            break


async def send(client: httpx.AsyncClient, claimed: Claimed, policy: TargetPolicy) -> Result:
    """One attempt: resolve and check the host, POST the signed body to the checked address."""
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(TOTAL_TIMEOUT_SECONDS):
            target = parse_target(claimed.url, policy)
            address = await resolve_target(target, policy)
            url, headers, extensions = pinned(target, address)
            body = claimed.body.encode()
            headers.update(signed_headers(claimed.id, claimed.secret, body, int(time.time())))
            headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
            request = client.build_request(
                "POST", url, content=body, headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                status = response.status_code
                await _read_some(response)
            finally:
                await response.aclose()
    except TargetRefused as exc:
        error = f"refused: {exc}"
    except TimeoutError:
        error = f"no answer within {TOTAL_TIMEOUT_SECONDS:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception as exc:
        # Still an attempt to log and retry; the details stay in the origin's log.
        log.exception("webhook delivery %s attempt %d failed", claimed.id, claimed.attempt)
        error = f"an unexpected error ({type(exc).__name__})"
    if status is not None and 300 <= status < 400:
        error = "redirects are not followed"
    return Result(status, error[:ERROR_MAX_CHARS] if error else None, time.monotonic() - started)


async def record(db: Database, claimed: Claimed, result: Result, settings: Settings) -> str:
    """Log the attempt and move the delivery on: delivered, retried later, or failed; the
    outcome."""
    now = datetime.now(UTC)
    async with db.session() as session:
        delivery = await session.get(WebhookDelivery, claimed.id, with_for_update=True)
        if delivery is None:
            return "dropped"  # its webhook was deleted meanwhile
        session.add(
            WebhookAttempt(
                delivery_id=claimed.id,
                attempt=claimed.attempt,
                status_code=result.status_code,
                error=result.error,
                duration_ms=round(result.seconds * 1000),
            )
        )
        if delivery.state != DeliveryState.pending.value:
            return "late"
        if result.delivered:
            delivery.state, delivery.finished_at = DeliveryState.succeeded.value, now
            return "delivered"
        if delivery.attempts != claimed.attempt:
            return "late"  # a newer attempt owns the row now
        if claimed.attempt >= settings.webhook_max_attempts:
            delivery.state, delivery.finished_at = DeliveryState.failed.value, now
            return "failed"
        wait = retry_delay_seconds(settings.webhook_retry_delays_seconds, claimed.attempt)
        delivery.next_attempt_at = now + timedelta(seconds=wait)
        return "retrying"


async def prune(db: Database, *, retention_seconds: float, limit: int = 1000) -> int:
    """Delete up to ``limit`` finished deliveries (with their attempts) past the retention."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retention_seconds)
    async with db.session() as session:
        old = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.state != DeliveryState.pending.value,
                WebhookDelivery.finished_at < cutoff,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(old)))
    return int(getattr(result, "rowcount", 0) or 0)


class WebhookDispatcher:
    """Passes over due deliveries every ``WEBHOOK_DISPATCH_INTERVAL_SECONDS`` (at once again
    while a pass finds a full batch), pruning finished ones every ``PRUNE_EVERY_SECONDS``."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.policy = policy_of(settings)
        # No pooled connections: each attempt connects to the address it has just checked.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(TOTAL_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
        )
        self._next_prune = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def _attempt(self, claimed: Claimed) -> None:
        result = await send(self.client, claimed, self.policy)
        ATTEMPT_SECONDS.observe(result.seconds)
        try:
            outcome = await record(self.db, claimed, result, self.settings)
        except IntegrityError:
            outcome = "dropped"
        if outcome in ("delivered", "retrying", "failed"):
            DELIVERIES.labels(outcome).inc()
        level = logging.INFO if result.delivered else logging.WARNING
        log.log(
            level,
            "webhook delivery %s attempt %d: %s (%s)",
            claimed.id,
            claimed.attempt,
            outcome,
            result.status_code or result.error,
        )

    async def run_once(self) -> int:
        """One pass: claim a batch and attempt each at once; how many were attempted."""
        batch = await claim(self.db, limit=self.settings.webhook_dispatch_concurrency)
        await asyncio.gather(*(self._attempt(claimed) for claimed in batch))
        return len(batch)

    async def _loop(self) -> None:
        while True:
            count = 0
            try:
                count = await self.run_once()
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                    retention = self.settings.webhook_retention_seconds
                    await prune(self.db, retention_seconds=retention)
            except Exception:
                log.exception("webhook dispatch pass failed")
            if count < self.settings.webhook_dispatch_concurrency:
                await asyncio.sleep(self.settings.webhook_dispatch_interval_seconds)

    def start(self) -> None:
        """Run the dispatcher in the background."""
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop the loop and close the client."""
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.client.aclose()


def dispatcher_hooks(settings: Settings) -> tuple[Hook, Hook]:
    """Startup and shutdown hooks running the webhook dispatcher in the origin."""
    running: list[WebhookDispatcher] = []

    async def start(_: FastAPI, res: Resources) -> None:
        dispatcher = WebhookDispatcher(res.need_db(), settings)
        running.append(dispatcher)
        dispatcher.start()

    async def stop(_: FastAPI, res: Resources) -> None:
        while running:
            await running.pop().stop()

    return start, stop
