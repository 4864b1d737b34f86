"""Captions: an owner's WebVTT or SRT file per language, published as HLS subtitle renditions.

``PUT /api/videos/{id}/captions/{lang}`` checks the file whole (``shared.media.captions``),
cuts it at the ladder's segment boundaries and stores it under a new version folder
``videos/<id>/captions/<lang>/<version>/``, beside the transcoder's runs, so a new run keeps
it. The served master playlist is the stored one plus a line per caption row
(``served_master``), so captions are added, replaced and removed without transcoding again.
Each change is a new version folder and then an edge purge, so nothing an edge cached outlives
it; the version it replaced is deleted once the row points at the new one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from services.origin import catalog
from services.origin.routes import Manager, Res, settings_of
from services.origin.service import segment_durations, video_prefix
from services.origin.settings import Settings
from shared.core.errors import Conflict, NotFound
from shared.db.caption_repository import CaptionRepository
from shared.db.models import VideoState
from shared.db.repositories import VideoRepository
from shared.http.auth import OptionalPrincipal, Principal
from shared.http.middleware import RouteBodyLimit
from shared.http.openapi import error_responses
from shared.media import captions, hls
from shared.runtime.resources import Resources
from shared.videos.access import managed, visible_video

log = logging.getLogger(__name__)

LANGUAGE_PATTERN = r"^[A-Za-z0-9-]{2,35}$"
# The route whose body is a caption file: larger than the origin's other bodies.
PUT_PATH = r"/api/videos/[^/]+/captions/[^/]+"
VTT_TYPE = "text/vtt"


def body_limit(settings: Settings) -> RouteBodyLimit:
    """The bound of an uploaded caption file (``ORIGIN_CAPTION_MAX_BYTES``), for BodyLimit."""
    return RouteBodyLimit("PUT", PUT_PATH, settings.origin_caption_max_bytes)


async def _check_room(
    repo: CaptionRepository, video_id: uuid.UUID, language: str, most: int
) -> None:
    """Conflict when ``language`` would be one language more than ``most``."""
    if await repo.find(video_id, language) is None and await repo.count(video_id) >= most:
        raise Conflict(f"video {video_id} has captions in {most} languages already")


async def put_caption(
    res: Resources,
    settings: Settings,
    video_id: uuid.UUID,
    language: str,
    label: str | None,
    data: bytes,
    content_type: str | None,
    actor: Principal,
) -> dict[str, Any]:
    """Add or replace the video's caption in ``language`` (its owner or an admin)."""
    language = captions.language_tag(language)
    label = captions.check_label(label) if label is not None else None
    most = settings.origin_captions_max_per_video
    async with res.need_db().session() as session:
        video = managed(await visible_video(session, video_id, actor), actor)
        await _check_room(CaptionRepository(session), video_id, language, most)
    if video.state != VideoState.ready.value or not video.master_key:
        raise Conflict(
            f"video {video_id} is not ready (state: {video.state}): captions follow its ladder",
            state=video.state,
        )
    master = (await res.need_store().get_bytes(video.master_key)).decode()
    durations = await segment_durations(res, video.master_key, master)
    if not durations:
        raise Conflict(f"video {video_id} has no segments to align captions with")
    seconds = video.duration_seconds or sum(durations)
    fmt, cues = captions.read_caption(data, content_type, max(seconds, sum(durations)))
    published = captions.publish(cues, durations)
    version = uuid.uuid4().hex
    prefix = captions.version_prefix(video_prefix(video_id), language, version)
    store = res.need_store()
    try:
        await store.put_bytes(
            prefix + captions.WHOLE_NAME, published.whole.encode(), content_type=VTT_TYPE
        )
        for name, text in published.segments:
            await store.put_bytes(prefix + name, text.encode(), content_type=VTT_TYPE)
        await store.put_bytes(
            prefix + captions.PLAYLIST_NAME,
            published.playlist.encode(),
            content_type="application/vnd.apple.mpegurl",
        )
        async with res.need_db().session() as session:
            # Locked: a deletion of the video or another change of its captions waits.
            await VideoRepository(session).get(video_id, for_update=True)
            repo = CaptionRepository(session)
            await _check_room(repo, video_id, language, most)  # again, under the lock
            replaced = await repo.put(
                video_id,
                language,
                label=label,
                version=version,
                source_format=fmt,
                cue_count=published.cue_count,
                size_bytes=len(data),
            )
            row = await repo.find(video_id, language)
            assert row is not None
            view = catalog.caption_view(row)
    except BaseException:
        await store.delete_prefix(prefix)
        raise
    if replaced is not None:
        await store.delete_prefix(
            captions.version_prefix(video_prefix(video_id), language, replaced)
        )
    await catalog.purge_edges(res, video_id, state=video.state, done="the captions are saved")
    log.info(
        "captions %s of video %s set by %s: %d cues", language, video_id, actor.name, len(cues)
    )
    return view


async def delete_caption(
    res: Resources, video_id: uuid.UUID, language: str, actor: Principal
) -> None:
    """Remove the video's caption in ``language`` (its owner or an admin)."""
    language = captions.language_tag(language)
    async with res.need_db().session() as session:
        video = managed(await visible_video(session, video_id, actor), actor)
        await VideoRepository(session).get(video_id, for_update=True)
        version = await CaptionRepository(session).remove(video_id, language)
        if version is None:
            raise NotFound(f"video {video_id} has no captions in {language}")
    await res.need_store().delete_prefix(
        captions.version_prefix(video_prefix(video_id), language, version)
    )
    await catalog.purge_edges(res, video_id, state=video.state, done="the captions are deleted")
    log.info("captions %s of video %s deleted by %s", language, video_id, actor.name)


async def list_captions(
    res: Resources, video_id: uuid.UUID, viewer: Principal | None
) -> list[dict[str, Any]]:
    """The video's captions, for whoever may see the video."""
    async with res.need_db().session() as session:
        await visible_video(session, video_id, viewer)
        return [catalog.caption_view(c) for c in await CaptionRepository(session).list(video_id)]


async def served_master(res: Resources, key: str, text: str) -> str:
    """The master playlist stored at ``key`` as viewers get it: with a subtitle rendition per
    caption of its video (``shared.media.captions.with_subtitles``); any other playlist as is."""
    if not hls.is_master(text):
        return text
    try:
        video_id = uuid.UUID(key.split("/", 2)[1])
    except (IndexError, ValueError):
        return text
    async with res.need_db().session() as session:
        rows = await CaptionRepository(session).list(video_id)
    taken: set[str] = set()
    tracks = [
        captions.Track(
            row.language,
            captions.track_name(row.language, row.label, taken),
            captions.track_uri(row.language, row.version),
        )
        for row in rows
    ]
    return captions.with_subtitles(text, tracks)


Language = Annotated[str, Path(pattern=LANGUAGE_PATTERN, description="A BCP 47 tag: fr, pt-BR")]


def router() -> APIRouter:
    """Add, replace, list and delete a video's captions."""
    routes = APIRouter(tags=["captions"])

    @routes.put(
        "/api/videos/{video_id}/captions/{language}",
        responses=error_responses(403, 409, 413, 415, 422),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    media_type: {"schema": {"type": "string"}}
                    for media_type in (VTT_TYPE, "application/x-subrip", "text/plain")
                },
            }
        },
    )
    async def put_video_caption(
        video_id: uuid.UUID,
        language: Language,
        request: Request,
        res: Res,
        actor: Manager,
        label: Annotated[
            str | None,
            Query(max_length=captions.LABEL_MAX_CHARS, description="The name players list"),
        ] = None,
    ) -> dict[str, Any]:
        """Add or replace the captions in ``language``: the body is a WebVTT or SRT file
        (``Content-Type`` text/vtt or application/x-subrip, else detected), at most
        ``ORIGIN_CAPTION_MAX_BYTES`` (its owner or an admin)."""
        # BodyLimit has bounded the body (body_limit) before this route ran.
        data = await request.body()
        content_type = request.headers.get("content-type")
        return await put_caption(
            res, settings_of(res), video_id, language, label, data, content_type, actor
        )

    @routes.get("/api/videos/{video_id}/captions")
    async def list_video_captions(
        video_id: uuid.UUID, res: Res, viewer: OptionalPrincipal
    ) -> dict[str, Any]:
        """The video's captions (whoever may see the video)."""
        return {"items": await list_captions(res, video_id, viewer)}

    @routes.delete(
        "/api/videos/{video_id}/captions/{language}",
        status_code=204,
        responses=error_responses(403, 503),
    )
    async def delete_video_caption(
        video_id: uuid.UUID, language: Language, res: Res, actor: Manager
    ) -> Response:
        """Delete the captions in ``language`` (its owner or an admin)."""
        await delete_caption(res, video_id, language, actor)
        return Response(status_code=204)

    return routes
