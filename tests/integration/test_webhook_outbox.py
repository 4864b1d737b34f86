"""The webhook outbox on real PostgreSQL: events staged with their state change, claimed by one
dispatcher at a time, retried, then failed."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select

from services.origin.settings import Settings
from services.origin.webhook_dispatcher import (
    JITTER,
    Claimed,
    Result,
    claim,
    prune,
    record,
    send,
)
from services.transcoder.service import fail_video
from services.upload.tls import ensure_self_signed
from shared.db.models import Video, VideoState, Webhook, WebhookAttempt, WebhookDelivery
from shared.http.targets import TargetPolicy, parse_networks
from shared.runtime.resources import Resources
from shared.videos.webhooks import EVENTS, EventName, enqueue_event, new_secret
from tests.support.accounts import Account, create_account
from tests.support.webhooks import documented_verify, serve_receiver

LOCAL = TargetPolicy(allowed_networks=parse_networks(["127.0.0.1/32"]))
Accounts = Callable[[], Account]


@pytest.fixture
async def accounts(res: Resources, test_env: dict[str, str]) -> AsyncIterator[Accounts]:
    """New accounts; their webhooks (and so their deliveries) are deleted after the test, so no
    origin of a later test tries to deliver them."""
    made: list[uuid.UUID] = []

    def new() -> Account:
        account = create_account(test_env)
        made.append(account.user_id)
        return account

    yield new
    async with res.need_db().session() as session:
        await session.execute(delete(Webhook).where(Webhook.owner_id.in_(made)))


async def _webhook(
    res: Resources, owner_id: uuid.UUID, events: list[EventName], *, active: bool = True
) -> uuid.UUID:
    async with res.need_db().session() as session:
        webhook = Webhook(
            owner_id=owner_id,
            url="https://hooks.example.com/in",
            events=list(events),
            secret=new_secret(),
            active=active,
        )
        session.add(webhook)
    return webhook.id


async def _video(res: Resources, owner_id: uuid.UUID, state: VideoState) -> uuid.UUID:
    async with res.need_db().session() as session:
        video = Video(owner_id=owner_id, state=state.value, title="hooked")
        session.add(video)
    return video.id


async def _deliveries(res: Resources, video_id: uuid.UUID) -> list[WebhookDelivery]:
    async with res.need_db().session() as session:
        rows = await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.video_id == video_id)
        )
        return list(rows)


async def _delivery(res: Resources, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    async with res.need_db().session() as session:
        return await session.get(WebhookDelivery, delivery_id)


async def _deletions_told(res: Resources, owner: Account, count: int) -> list[uuid.UUID]:
    """Deliveries of ``count`` videos' deletion to a webhook of ``owner``, one per video."""
    await _webhook(res, owner.user_id, ["video.deleted"])
    delivery_ids = []
    for _ in range(count):
        video_id = await _video(res, owner.user_id, VideoState.ready)
        async with res.need_db().session() as session:
            video = await session.get(Video, video_id)
            assert video is not None
            await enqueue_event(session, video, "video.deleted")
        (delivery,) = await _deliveries(res, video_id)
        delivery_ids.append(delivery.id)
    return delivery_ids


async def test_an_event_is_staged_per_wanting_webhook_only_if_its_change_commits(
    res: Resources, accounts: Accounts
) -> None:
    owner, stranger = accounts(), accounts()
    wants_ready = await _webhook(res, owner.user_id, ["video.ready"])
    wants_all = await _webhook(res, owner.user_id, list(EVENTS))
    await _webhook(res, owner.user_id, list(EVENTS), active=False)
    await _webhook(res, owner.user_id, ["video.uploaded", "video.deleted"])
    await _webhook(res, stranger.user_id, list(EVENTS))
    video_id = await _video(res, owner.user_id, VideoState.transcoding)

    with pytest.raises(RuntimeError):
        async with res.need_db().session() as session:
            video = await session.get(Video, video_id)
            assert video is not None
            video.state = VideoState.ready.value
            await enqueue_event(session, video, "video.ready")
            raise RuntimeError("the state change fails")
    assert await _deliveries(res, video_id) == []

    async with res.need_db().session() as session:
        video = await session.get(Video, video_id)
        assert video is not None
        video.state = VideoState.ready.value
        await enqueue_event(session, video, "video.ready")
    staged = await _deliveries(res, video_id)
    assert {d.webhook_id for d in staged} == {wants_ready, wants_all}
    assert len({d.id for d in staged}) == 2
    bodies = [json.loads(d.body) for d in staged]
    assert {b["type"] for b in bodies} == {"video.ready"}
    assert len({b["id"] for b in bodies}) == 1  # one event, told to two webhooks
    assert bodies[0]["data"]["video"] == {
        "id": str(video_id),
        "state": "ready",
        "title": "hooked",
        "privacy": "public",
        "duration_seconds": None,
        "error": None,
    }
    assert all(d.state == "pending" and d.attempts == 0 for d in staged)


async def test_a_failed_video_is_told_once_with_its_reason(
    res: Resources, accounts: Accounts
) -> None:
    owner = accounts()
    await _webhook(res, owner.user_id, ["video.failed"])
    video_id = await _video(res, owner.user_id, VideoState.transcoding)
    await fail_video(res, video_id, "the source is truncated")
    await fail_video(res, video_id, "the source is truncated")  # the job delivered again
    staged = await _deliveries(res, video_id)
    assert len(staged) == 1
    body = json.loads(staged[0].body)
    assert body["type"] == "video.failed"
    assert body["data"]["video"]["state"] == "failed"
    assert body["data"]["video"]["error"] == "the source is truncated"


async def test_a_delivery_locked_by_one_dispatcher_is_skipped_by_another(
    res: Resources, accounts: Accounts
) -> None:
    mine = set(await _deletions_told(res, accounts(), 6))
    held = sorted(mine)[:2]
    db = res.need_db()
    async with db.session() as holder:
        # Another dispatcher's claim, still open: its rows are skipped, not waited for.
        await holder.execute(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.id.in_(held))
            .with_for_update(skip_locked=True)
        )
        first = await asyncio.wait_for(claim(db, limit=100), timeout=5)
    claimed = [c for c in first if c.id in mine]
    assert {c.id for c in claimed} == mine - set(held)
    assert all(c.attempt == 1 for c in claimed)
    # Claimed rows are leased: the next pass takes only what was locked before.
    second = [c for c in await claim(db, limit=100) if c.id in mine]
    assert {c.id for c in second} == set(held)
    # Two passes at once never take the same row.
    async with db.session() as session:
        for delivery in await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.id.in_(mine))
        ):
            delivery.next_attempt_at = datetime.now(UTC)
    both = await asyncio.gather(claim(db, limit=3), claim(db, limit=3), claim(db, limit=100))
    taken = [c.id for batch in both for c in batch if c.id in mine]
    assert sorted(taken) == sorted(mine)


async def test_failures_are_retried_after_the_delay_then_the_delivery_fails(
    res: Resources, accounts: Accounts
) -> None:
    (delivery_id,) = await _deletions_told(res, accounts(), 1)
    settings = Settings(webhook_max_attempts=2, webhook_retry_delays_seconds=[60.0])
    db = res.need_db()
    refused = Result(status_code=None, error="refused: 10.0.0.1 is private", seconds=0.01)

    (first,) = [c for c in await claim(db, limit=100) if c.id == delivery_id]
    before = datetime.now(UTC)
    assert await record(db, first, refused, settings) == "retrying"
    after_one = await _delivery(res, delivery_id)
    assert after_one is not None
    wait = after_one.next_attempt_at - before
    assert timedelta(seconds=60 * (1 - JITTER) - 1) <= wait <= timedelta(seconds=60 * (1 + JITTER))
    assert after_one.state == "pending"
    assert [c for c in await claim(db, limit=100) if c.id == delivery_id] == []  # not yet due

    async with db.session() as session:
        row = await session.get(WebhookDelivery, delivery_id)
        assert row is not None
        row.next_attempt_at = datetime.now(UTC)
    (second,) = [c for c in await claim(db, limit=100) if c.id == delivery_id]
    assert second.attempt == 2
    answered = Result(status_code=503, error=None, seconds=0.02)
    assert await record(db, second, answered, settings) == "failed"
    final = await _delivery(res, delivery_id)
    assert final is not None
    assert final.state == "failed" and final.finished_at is not None
    async with db.session() as session:
        log = list(
            await session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.attempt)
            )
        )
    assert [(a.attempt, a.status_code, a.error) for a in log] == [
        (1, None, "refused: 10.0.0.1 is private"),
        (2, 503, None),
    ]
    assert [c for c in await claim(db, limit=100) if c.id == delivery_id] == []


async def test_finished_deliveries_are_pruned_after_the_retention(
    res: Resources, accounts: Accounts
) -> None:
    old, recent, pending = await _deletions_told(res, accounts(), 3)
    long_ago = datetime.now(UTC) - timedelta(days=31)
    async with res.need_db().session() as session:
        for delivery_id, finished in ((old, long_ago), (recent, datetime.now(UTC))):
            row = await session.get(WebhookDelivery, delivery_id)
            assert row is not None
            row.state, row.finished_at = "succeeded", finished
            session.add(WebhookAttempt(delivery_id=delivery_id, attempt=1, duration_ms=5))
        row = await session.get(WebhookDelivery, pending)
        assert row is not None
        row.created_at = long_ago
    assert await prune(res.need_db(), retention_seconds=30 * 86_400) >= 1
    assert await _delivery(res, old) is None
    assert await _delivery(res, recent) is not None and await _delivery(res, pending) is not None
    async with res.need_db().session() as session:
        logged = await session.scalars(
            select(WebhookAttempt.delivery_id).where(WebhookAttempt.delivery_id.in_([old, recent]))
        )
        assert set(logged) == {recent}


def _claimed(url: str) -> Claimed:
    return Claimed(uuid.uuid4(), 1, '{"type":"video.ready"}', url, new_secret())


async def test_an_attempt_goes_to_the_checked_address_under_the_targets_name(
    tmp_path: Path,
) -> None:
    # A certificate for the name alone: the handshake succeeds only if TLS still names it.
    certificate = ensure_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ("localhost",))
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    with serve_receiver(certificate) as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        hook = _claimed(f"https://localhost:{port}/in?x=1")
        async with httpx.AsyncClient(verify=trusting, trust_env=False) as client:
            result = await send(client, hook, LOCAL)
            assert (result.status_code, result.error, result.delivered) == (204, None, True)
            (request,) = receiver.at("/in?x=1")
            assert request.headers["host"] == f"localhost:{port}"
            assert request.headers["webhook-id"] == str(hook.id)
            assert documented_verify()(hook.secret, request.headers, request.body)

            # Where the name's checked addresses are not allowed, nothing is sent.
            refused = await send(client, hook, TargetPolicy())
            assert refused.status_code is None and refused.delivered is False
            assert refused.error is not None and refused.error.startswith("refused: ")
            assert len(receiver.at("/in?x=1")) == 1


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed() -> None:
    with serve_receiver() as receiver:
        receiver.failures["/moved"] = [302]
        policy = TargetPolicy(allow_http=True, allowed_networks=LOCAL.allowed_networks)
        async with httpx.AsyncClient(trust_env=False) as client:
            result = await send(client, _claimed(f"{receiver.url}/moved"), policy)
        assert result.status_code == 302 and not result.delivered
        assert result.error == "redirects are not followed"
        assert [r.path for r in receiver.requests] == ["/moved"]
