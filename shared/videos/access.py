"""Who may see a video: anyone for public and unlisted ones, the owner and admins for private.

Public videos are listed in the catalog; unlisted ones play for whoever has the link but are
listed only to their owner; private ones answer 404 to everyone else, as if they did not exist,
so a stranger cannot even learn that the id is taken.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from shared.core.errors import Forbidden, NotFound
from shared.db.models import Privacy, Video
from shared.db.repositories import VideoRepository
from shared.http.auth import Principal, may_manage


def may_view(video: Video, viewer: Principal | None) -> bool:
    """Whether ``viewer`` (None: anonymous) may see the video and obtain its stream URLs."""
    return video.privacy != Privacy.private.value or may_manage(viewer, video.owner_id)


def managed(video: Video, actor: Principal) -> Video:
    """``video`` when ``actor`` may change it (its owner or an admin); Forbidden otherwise. A
    private video of another account is a NotFound before this (``visible_video``)."""
    if not may_manage(actor, video.owner_id):
        raise Forbidden(f"video {video.id} belongs to another account")
    return video


async def visible_video(
    session: AsyncSession,
    video_id: uuid.UUID,
    viewer: Principal | None,
    *,
    channel: str | None = None,
) -> Video:
    """The video if ``viewer`` may see it (and, given ``channel``, it is that channel's); else
    NotFound."""
    repo = VideoRepository(session)
    video = await repo.get(video_id)
    if not may_view(video, viewer):
        raise NotFound(f"video {video_id} does not exist")
    if channel is not None and await repo.channel_of(video) != channel:
        raise NotFound(f"video {video_id} is not a video of channel {channel}")
    return video
