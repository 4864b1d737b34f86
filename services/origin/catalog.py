"""Catalog use cases: list and search videos, one video's details, edit it, delete it entirely.

The catalog lists public videos, plus the caller's own (an admin's: every video). Only a
video's owner or an admin (or an operator with the origin's admin token) edits or deletes it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from services.origin.schemas import VideoEdit
from services.origin.service import base_url, thumbnails_key, video_prefix
from services.origin.settings import Settings
from shared.core.errors import Conflict, NotFound, ServiceUnavailable, Unauthorized
from shared.core.signing import Signer
from shared.db.caption_repository import CaptionRepository
from shared.db.models import Caption, Role, Video, VideoState
from shared.db.repositories import VideoRepository
from shared.http.auth import CHALLENGE, Principal
from shared.mq.messages import VideoEvent
from shared.runtime.resources import Resources
from shared.videos import progress
from shared.videos.access import managed, visible_video
from shared.videos.api import video_view
from shared.videos.metadata import (
    DESCRIPTION_MAX_CHARS,
    TITLE_MAX_CHARS,
    check_text,
    parse_tags,
)
from shared.videos.webhooks import enqueue_event

log = logging.getLogger(__name__)

# Who holds ORIGIN_ADMIN_TOKEN: an operator, with an admin's rights over every video.
OPERATOR = Principal(uuid.UUID(int=0), "operator", Role.admin.value)


def _entry(signer: Signer, settings: Settings, video: Video, request_base: str) -> dict[str, Any]:
    """Catalog fields beyond the common view: a short-lived signed poster URL."""
    poster_url = None
    if video.poster_key and video.state == VideoState.ready.value:
        poster_url = signer.signed_url(
            base_url(settings, request_base), video.poster_key, settings.origin_playlist_ttl_seconds
        )
    return {"poster_url": poster_url, "track_id": video.track_id}


async def _live_progress(res: Resources, video: Video) -> dict[str, Any]:
    if res.redis is None or video.state == VideoState.ready.value:
        return {}
    return await progress.latest(res.redis, video.id)


async def list_videos(
    res: Resources,
    settings: Settings,
    signer: Signer,
    request_base: str,
    *,
    query: str | None,
    state: VideoState | None,
    viewer: Principal | None,
    mine: bool,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """A page of the videos ``viewer`` may list, newest first, matching the search text and
    state; only the viewer's own with ``mine``."""
    if mine and viewer is None:
        raise Unauthorized("listing your videos needs an account", headers=CHALLENGE)
    async with res.need_db().session() as session:
        videos, total = await VideoRepository(session).list(
            query=query or None,
            state=state.value if state else None,
            viewer_id=viewer.user_id if viewer else None,
            everything=viewer is not None and viewer.is_admin,
            owner_id=viewer.user_id if mine and viewer else None,
            limit=limit,
            offset=offset,
        )
    items = [
        {
            **video_view(video, await _live_progress(res, video)),
            **_entry(signer, settings, video, request_base),
        }
        for video in videos
    ]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


async def video_details(
    res: Resources,
    settings: Settings,
    signer: Signer,
    video_id: uuid.UUID,
    request_base: str,
    viewer: Principal | None,
) -> dict[str, Any]:
    """State, metadata, renditions and live progress of one video ``viewer`` may see."""
    async with res.need_db().session() as session:
        video = await visible_video(session, video_id, viewer)
        captions = [caption_view(c) for c in await CaptionRepository(session).list(video_id)]
    live = await progress.latest(res.redis, video_id) if res.redis else {}
    previews = await thumbnails_key(res, video) if video.state == VideoState.ready.value else None
    thumbnails_url = None
    if previews is not None:
        thumbnails_url = signer.signed_url(
            base_url(settings, request_base), previews, settings.origin_playlist_ttl_seconds
        )
    return {
        **video_view(video, live),
        **_entry(signer, settings, video, request_base),
        "thumbnails_url": thumbnails_url,
        "captions": captions,
    }


def _edited(edit: VideoEdit) -> dict[str, Any]:
    """The columns an edit sets, each checked as at upload (InvalidMetadata otherwise)."""
    fields: dict[str, Any] = {}
    if edit.title is not None:
        fields["title"] = check_text("title", edit.title, TITLE_MAX_CHARS)
    if edit.description is not None:
        fields["description"] = check_text(
            "description", edit.description, DESCRIPTION_MAX_CHARS, multiline=True
        )
    if edit.tags is not None:
        fields["tags"] = parse_tags(",".join(edit.tags))
    if edit.privacy is not None:
        fields["privacy"] = edit.privacy.value
    if edit.track_id is not None:
        fields["track_id"] = edit.track_id
    return fields


async def edit_video(
    res: Resources,
    settings: Settings,
    signer: Signer,
    video_id: uuid.UUID,
    request_base: str,
    edit: VideoEdit,
    actor: Principal,
) -> dict[str, Any]:
    """Change a video's title, description, tags, privacy or track id (its owner or an admin).

    A track id another video holds is a Conflict.
    """
    fields = _edited(edit)
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        video = await repo.get(video_id, for_update=True)
        managed(video, actor)
        if "track_id" in fields:
            holder = await repo.id_of_track(fields["track_id"])
            if holder not in (None, video_id):
                raise Conflict(f"track id {fields['track_id']} names another video")
        for name, value in fields.items():
            setattr(video, name, value)
        await session.flush()
    log.info("video %s edited by %s: %s", video_id, actor.name, ", ".join(fields) or "nothing")
    return await video_details(res, settings, signer, video_id, request_base, actor)


async def delete_video(res: Resources, video_id: uuid.UUID, actor: Principal) -> int:
    """Remove the video's objects and rows; returns how many objects were deleted.

    The row is marked deleted first (committed), so it vanishes from the catalog and stops
    playing at once; then the objects go, then every edge is told to purge its copies
    (``video.deleted``), then the rows. If a step fails the row stays marked and deleting again
    finishes the job, so nothing is left orphaned and no edge keeps serving the video. Only
    ``actor`` the owner or an admin may (403 otherwise).
    """
    async with res.need_db().session() as session:
        repo = VideoRepository(session)
        video = await repo.find(video_id)
        if video is None:
            raise NotFound(f"video {video_id} does not exist")
        managed(video, actor)
        if video.state != VideoState.deleted.value:
            await repo.transition(video, VideoState.deleted)
            await enqueue_event(session, video, "video.deleted")
        extra_keys = [
            key
            for key in (video.source_key, video.master_key, video.poster_key)
            if key and not key.startswith(video_prefix(video_id))
        ]
    store = res.need_store()
    deleted = await store.delete_prefix(video_prefix(video_id))
    for key in extra_keys:
        await store.delete(key)
    await purge_edges(res, video_id, done="the video's objects are deleted")
    async with res.need_db().session() as session:
        await VideoRepository(session).purge(video_id)
    if res.redis is not None:
        await res.redis.delete(progress.progress_key(video_id))
    log.info("deleted video %s with %d objects", video_id, deleted + len(extra_keys))
    return deleted + len(extra_keys)


def caption_view(caption: Caption) -> dict[str, Any]:
    """The public JSON shape of a video's caption in one language."""
    return {
        "language": caption.language,
        "label": caption.label,
        "format": caption.source_format,
        "cues": caption.cue_count,
        "size_bytes": caption.size_bytes,
        "updated_at": caption.updated_at.isoformat() if caption.updated_at else None,
    }


async def purge_edges(
    res: Resources, video_id: uuid.UUID, *, done: str, state: str = VideoState.deleted.value
) -> None:
    """Each edge drops every cached object of the video: after its deletion, or after a change
    of what its playlists name (captions). ``video.deleted`` is the purge edges follow;
    ``state`` says what became of the video, ``done`` what already happened, for the 503."""
    event = VideoEvent(type="video.deleted", video_id=video_id, state=state)
    try:
        await res.need_broker().publish_event(event)
    except Exception as exc:
        log.warning("could not ask the edges to purge video %s: %s", video_id, exc)
        raise ServiceUnavailable(
            f"{done} but the edges could not be told to purge their copies; try again",
            headers={"Retry-After": str(res.settings.busy_retry_after_seconds)},
        ) from None
