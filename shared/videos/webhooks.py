"""Webhook events: written with the state change that causes them, signed when sent.

``enqueue_event`` is the one hook: called in the transaction that moves a video to uploaded
(queued), ready, failed or deleted, it writes one delivery row per webhook of the video's owner
that asked for the event, so the event exists exactly when the change is committed. The origin's
dispatcher sends the rows (``services.origin.webhook_dispatcher``). docs/WEBHOOKS.md is what a
receiver reads: the body, the headers and how to verify the signature.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Text, func, insert, literal, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Video, Webhook, WebhookDelivery

EventName = Literal["video.uploaded", "video.ready", "video.failed", "video.deleted"]
EVENTS: tuple[EventName, ...] = ("video.uploaded", "video.ready", "video.failed", "video.deleted")
SECRET_PREFIX = "whsec_"


class DeliveryState(enum.StrEnum):
    """pending (due at ``next_attempt_at``) -> succeeded | failed (out of attempts)."""

    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, hex, after ``whsec_``."""
    return SECRET_PREFIX + secrets.token_hex(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    delivery_id: uuid.UUID, secret: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """The headers of one attempt: the delivery's id (the same on every retry), the time, the
    signature."""
    return {
        "Webhook-Id": str(delivery_id),
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signature(secret, timestamp, body),
    }


def event_body(video: Video, event: EventName) -> str:
    """The JSON every webhook of the event receives; ``id`` names the event itself."""
    payload = {
        "id": str(uuid.uuid4()),
        "type": event,
        "created_at": datetime.now(UTC).isoformat(),
        "data": {
            "video": {
                "id": str(video.id),
                "state": video.state,
                "title": video.title,
                "privacy": video.privacy,
                "duration_seconds": video.duration_seconds,
                "error": video.error,
            }
        },
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


async def enqueue_event(session: AsyncSession, video: Video, event: EventName) -> None:
    """Stage ``event`` of ``video`` for every active webhook of its owner that wants it, in the
    caller's transaction: the deliveries exist only if the caller commits."""
    if video.owner_id is None:
        return
    wanted = select(
        func.gen_random_uuid(),
        Webhook.id,
        literal(event),
        literal(video.id, UUID(as_uuid=True)),
        literal(event_body(video, event), Text),
    ).where(
        Webhook.owner_id == video.owner_id,
        Webhook.active.is_(True),
        Webhook.events.any_() == event,
    )
    columns = ["id", "webhook_id", "event", "video_id", "body"]
    await session.execute(insert(WebhookDelivery).from_select(columns, wanted))
