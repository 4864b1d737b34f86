"""A video's own poster: ``PUT`` replaces the transcoder's frame, ``DELETE`` brings it back.

Checks run cheapest first: the body's size (``ORIGIN_POSTER_MAX_BYTES``) before it is read (a
route bound of the origin's ``BodyLimit``), then the caller (401) and the video's owner (403, or
404 for a private video the caller cannot see),
then the type by its first bytes (JPEG, PNG or WebP; 415 otherwise), then ffprobe decodes it
under a pixel bound and its width and height are held to ``ORIGIN_POSTER_MAX_SIDE_PIXELS``
(422 for anything that does not decode into one frame within them). A poster is stored as a new
object; the one it replaces is deleted and the edges are told to drop their copies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from services.origin import catalog
from services.origin.routes import Manager, Res, request_base, settings_of
from services.origin.service import playback_prefix, video_prefix
from services.origin.settings import Settings
from shared.core.errors import (
    BadRequest,
    Conflict,
    ServiceUnavailable,
    UnprocessableContent,
    UnsupportedMediaType,
)
from shared.core.signing import Signer
from shared.db.models import Video, VideoState
from shared.db.repositories import VideoRepository
from shared.http.auth import Principal
from shared.http.middleware import RouteBodyLimit
from shared.http.openapi import error_responses
from shared.media import tools
from shared.mq.messages import VideoEvent
from shared.runtime.resources import Resources
from shared.videos.access import managed, visible_video

log = logging.getLogger(__name__)

POSTER_PATH = r"/api/videos/[^/]+/poster"
TRANSCODED_POSTER = "poster.jpg"
PROBE_TIMEOUT_SECONDS = 20
# (magic bytes at offset 0, magic at offset 8, extension, content type, ffmpeg demuxer)
_KINDS = (
    (b"\xff\xd8\xff", b"", "jpg", "image/jpeg", "jpeg_pipe"),
    (b"\x89PNG\r\n\x1a\n", b"", "png", "image/png", "png_pipe"),
    (b"RIFF", b"WEBP", "webp", "image/webp", "webp_pipe"),
)


def body_limit(settings: Settings) -> RouteBodyLimit:
    """The origin's body bound for poster uploads."""
    return RouteBodyLimit("PUT", POSTER_PATH, settings.origin_poster_max_bytes)


def image_kind(body: bytes) -> tuple[str, str, str]:
    """(extension, content type, demuxer) of a JPEG, PNG or WebP body, by its first bytes."""
    for head, at_eight, extension, content_type, demuxer in _KINDS:
        if body.startswith(head) and (not at_eight or body[8:12] == at_eight):
            return extension, content_type, demuxer
    raise UnsupportedMediaType("a poster is a JPEG, PNG or WebP image")


async def check_image(body: bytes, demuxer: str, max_side: int) -> tuple[int, int]:
    """Decode the image with ffprobe; its width and height, or UnprocessableContent."""
    with tempfile.TemporaryDirectory(prefix="vsp-poster-") as folder:
        path = Path(folder) / "poster"
        await asyncio.to_thread(path.write_bytes, body)
        try:
            done = await tools.run_to_end(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-threads",
                    "1",
                    # The decoder refuses a frame larger than the bound before allocating it.
                    "-max_pixels",
                    str(max_side * max_side),
                    "-protocol_whitelist",
                    "file",
                    "-f",
                    demuxer,
                    "-count_frames",
                    "-show_entries",
                    "stream=width,height,nb_read_frames",
                    "-of",
                    "json",
                    str(path),
                ],
                PROBE_TIMEOUT_SECONDS,
            )
        except TimeoutError:
            raise UnprocessableContent("the image took too long to decode") from None
    try:
        streams = json.loads(done.stdout or b"{}").get("streams") or [{}]
        width, height = int(streams[0].get("width", 0)), int(streams[0].get("height", 0))
        frames = int(streams[0].get("nb_read_frames", 0))
    except (ValueError, TypeError, AttributeError):
        width = height = frames = 0
    if width > max_side or height > max_side:
        raise UnprocessableContent(
            f"the image is {width}x{height}; a poster is at most {max_side}x{max_side} pixels"
        )
    if done.returncode != 0 or done.stderr or frames != 1 or not width or not height:
        log.info("poster refused by the decoder: %s", done.stderr.replace("\n", " | ") or "-")
        raise UnprocessableContent(
            f"the image does not decode (or is over {max_side}x{max_side} pixels)"
        )
    return width, height


def is_uploaded(video_id: uuid.UUID, key: str | None) -> bool:
    """Whether ``key`` is a poster uploaded for the video (not the transcoder's frame)."""
    return bool(key) and str(key).startswith(f"{video_prefix(video_id)}posters/")


async def _managed_ready_video(res: Resources, video_id: uuid.UUID, actor: Principal) -> Video:
    async with res.need_db().session() as session:
        # A private video of another account does not exist for the caller (404).
        video = await visible_video(session, video_id, actor)
    managed(video, actor)
    if video.state != VideoState.ready.value:
        raise Conflict(
            f"video {video_id} is not ready (state: {video.state}); its poster can change "
            "once it is",
            state=video.state,
        )
    return video


async def _set_poster(res: Resources, video_id: uuid.UUID, key: str | None) -> str | None:
    """Point the row at ``key``; the poster key it had."""
    async with res.need_db().session() as session:
        video = await VideoRepository(session).get(video_id, for_update=True)
        old = video.poster_key
        video.poster_key = key
    return old


async def _drop_old(res: Resources, video: Video, old: str | None, new: str | None) -> None:
    """Delete a replaced uploaded poster and tell the edges to drop their copies."""
    if old == new or not is_uploaded(video.id, old):
        return
    assert old is not None
    await res.need_store().delete(old)
    event = VideoEvent(
        type="video.deleted", video_id=video.id, state=video.state, data={"object": old}
    )
    try:
        await res.need_broker().publish_event(event)
    except Exception as exc:
        log.warning("could not tell the edges to drop poster %s: %s", old, exc)
        raise ServiceUnavailable(
            "the poster is changed but the edges could not be told to drop the old one; "
            "send the request again",
            headers={"Retry-After": str(res.settings.busy_retry_after_seconds)},
        ) from None


async def transcoded_poster(res: Resources, video: Video) -> str | None:
    """The frame the transcoder took for the video, when its run has one."""
    if not video.master_key:
        return None
    key = playback_prefix(video.master_key) + TRANSCODED_POSTER
    return key if await res.need_store().exists(key) else None


def router(signer: Signer) -> APIRouter:
    """``PUT`` and ``DELETE /api/videos/{id}/poster`` (the video's owner or an admin)."""
    routes = APIRouter(tags=["catalog"])

    @routes.put(
        "/api/videos/{video_id}/poster",
        responses=error_responses(400, 403, 409, 413, 415, 422),
    )
    async def replace_poster(
        video_id: uuid.UUID, request: Request, res: Res, actor: Manager
    ) -> dict[str, Any]:
        """Replace the video's poster with the JPEG, PNG or WebP image in the body."""
        settings = settings_of(res)
        video = await _managed_ready_video(res, video_id, actor)
        # BodyLimit has bounded the body to ORIGIN_POSTER_MAX_BYTES already.
        body = await request.body()
        if not body:
            raise BadRequest("the request body is empty: send the image")
        extension, content_type, demuxer = image_kind(body)
        width, height = await check_image(body, demuxer, settings.origin_poster_max_side_pixels)
        key = f"{video_prefix(video_id)}posters/{uuid.uuid4().hex}.{extension}"
        store = res.need_store()
        await store.put_bytes(key, body, content_type)
        try:
            old = await _set_poster(res, video_id, key)
        except BaseException:
            await store.delete(key)
            raise
        log.info("video %s: poster %s (%dx%d) by %s", video_id, key, width, height, actor.name)
        await _drop_old(res, video, old, key)
        return await catalog.video_details(
            res, settings, signer, video_id, request_base(request, res), actor
        )

    @routes.delete("/api/videos/{video_id}/poster", responses=error_responses(403, 409))
    async def restore_poster(
        video_id: uuid.UUID, request: Request, res: Res, actor: Manager
    ) -> dict[str, Any]:
        """Drop an uploaded poster: the video shows the transcoder's frame again."""
        video = await _managed_ready_video(res, video_id, actor)
        original = await transcoded_poster(res, video)
        old = await _set_poster(res, video_id, original)
        await _drop_old(res, video, old, original)
        return await catalog.video_details(
            res, settings_of(res), signer, video_id, request_base(request, res), actor
        )

    return routes
