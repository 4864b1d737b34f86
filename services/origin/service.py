"""Origin use cases: signed playlists and the stream URLs players start from."""

from __future__ import annotations

import posixpath
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.origin.playlists import children_ttl, sign_playlist, sign_thumbnails
from services.origin.settings import Settings
from shared.core.errors import Conflict, NotFound
from shared.core.signing import Signer
from shared.db.models import Rendition, Video, VideoState
from shared.db.repositories import VideoRepository
from shared.http.auth import Principal
from shared.media import hls, thumbnails
from shared.media.captions import stored_key
from shared.runtime.resources import Resources
from shared.videos.access import visible_video

StreamMode = Literal["query", "token"]


@dataclass
class StreamUrls:
    master_url: str
    variants: list[dict[str, object]]
    expires_in: int
    mode: StreamMode
    expires_at: int = field(default=0)
    thumbnails_url: str | None = None


async def segment_durations(res: Resources, playlist_key: str, text: str) -> list[float]:
    """The EXTINF durations of a media playlist, or of a master's first rendition."""
    if not hls.is_master(text):
        return hls.media_durations(text)
    for uri in hls.referenced_uris(text):
        if not hls.is_absolute(uri) and uri.split("?", 1)[0].endswith(".m3u8"):
            # A subtitle rendition named before the variants is stored beside the runs.
            key = stored_key(hls.resolve(playlist_key, uri))
            return hls.media_durations((await res.need_store().get_bytes(key)).decode())
    return []


async def media_seconds_of(res: Resources, playlist_key: str, text: str) -> float:
    """How long the media behind a playlist lasts (a master: its first variant's length)."""
    return sum(await segment_durations(res, playlist_key, text))


async def signed_playlist(
    res: Resources,
    settings: Settings,
    signer: Signer,
    key: str,
    *,
    now: float | None = None,
    text: str | None = None,
) -> bytes:
    """The stored playlist with every child URI signed for the rest of the media's length.

    ``text`` is the playlist served at ``key`` when it is not the object stored there (a master
    with its subtitle renditions, a caption playlist stored beside the runs).
    """
    if text is None:
        text = (await res.need_store().get_bytes(key)).decode()
    seconds = await media_seconds_of(res, key, text)
    ttl = (
        settings.origin_playlist_ttl_seconds
        if hls.is_master(text)
        else settings.origin_segment_ttl_seconds
    )
    return sign_playlist(text, key, signer, children_ttl(ttl, seconds), now=now).encode()


async def signed_thumbnails(
    res: Resources, settings: Settings, signer: Signer, key: str, *, now: float | None = None
) -> bytes:
    """The stored thumbnails track with every sprite URI signed for the rest of the video."""
    text = (await res.need_store().get_bytes(key)).decode()
    ttl = children_ttl(settings.origin_segment_ttl_seconds, thumbnails.last_cue_end(text))
    return sign_thumbnails(text, key, signer, ttl, now=now).encode()


async def thumbnails_key(res: Resources, video: Video) -> str | None:
    """The video's thumbnails track (beside its master playlist), when its run has one."""
    if not video.master_key:
        return None
    key = playback_prefix(video.master_key) + thumbnails.THUMBNAILS
    return key if await res.need_store().exists(key) else None


def base_url(settings: Settings, request_base: str) -> str:
    """Where signed URLs point: the CDN, the configured public URL, or where the viewer asked."""
    chosen = settings.origin_cdn_base_url or settings.public_origin_url or request_base
    return chosen.rstrip("/") + "/origin"


def video_prefix(video_id: uuid.UUID) -> str:
    """Where every object of the video lives."""
    return f"videos/{video_id}/"


def playback_prefix(master_key: str) -> str:
    """What a path token covers: the master playlist's folder (renditions, segments, poster).

    Not the whole video folder, so a token never opens the uploaded source or another run.
    """
    return posixpath.dirname(master_key) + "/"


async def video_id_for(session: AsyncSession, name: uuid.UUID | str) -> uuid.UUID:
    """The video ``name`` names: a video id, else a streaming-gateway ``track_id``; NotFound
    when neither (as the gateway answered for a track it did not have)."""
    repo = VideoRepository(session)
    try:
        video_id = uuid.UUID(str(name))
    except ValueError:
        pass
    else:
        if await repo.find(video_id) is not None:
            return video_id
    found = await repo.id_of_track(str(name))
    if found is None:
        raise NotFound(f"video {name} does not exist")
    return found


async def ready_video(
    res: Resources, name: uuid.UUID | str, viewer: Principal | None, channel: str | None = None
) -> Video:
    """The video ``name`` names if ``viewer`` may play it (and it is ``channel``'s, when given);
    NotFound or Conflict (with its state) otherwise."""
    async with res.need_db().session() as session:
        video_id = await video_id_for(session, name)
        video = await visible_video(session, video_id, viewer, channel=channel)
    # A transcoding video whose first segments are published plays as an EVENT stream.
    playable = (VideoState.ready.value, VideoState.transcoding.value)
    if video.state not in playable or not video.master_key:
        raise Conflict(
            f"video {video_id} is not ready to play (state: {video.state})", state=video.state
        )
    return video


def chosen_renditions(video: Video, bitrates: list[int] | None) -> list[Rendition]:
    """The video's variants whose bitrate (BANDWIDTH) is listed; all when ``bitrates`` is None.

    NotFound, naming the bitrates the video has, when none is listed.
    """
    if bitrates is None:
        return list(video.renditions)
    chosen = [r for r in video.renditions if r.bandwidth in bitrates]
    if not chosen:
        raise NotFound(
            f"video {video.id} has no variant at bitrates {bitrates}",
            available_bitrates=[r.bandwidth for r in video.renditions],
        )
    return chosen


async def stream_urls(
    res: Resources,
    settings: Settings,
    signer: Signer,
    name: uuid.UUID | str,
    request_base: str,
    mode: StreamMode | None = None,
    *,
    viewer: Principal | None = None,
    channel: str | None = None,
    bitrates: list[int] | None = None,
) -> StreamUrls:
    """Signed master and variant URLs, in the streaming gateway's response shape.

    ``name`` is the video's id or its ``track_id``. A private video's URLs go to its owner and
    admins only; ``channel`` (the gateway's
    ``artist_id``) must name the video's owner when given; ``bitrates`` (the gateway's
    ``available_bitrates``, by default ``ORIGIN_AVAILABLE_BITRATES``) chooses the variants.
    """
    video = await ready_video(res, name, viewer, channel)
    renditions = chosen_renditions(video, bitrates or settings.origin_available_bitrates)
    assert video.master_key is not None  # ready_video checked it
    mode = mode or settings.origin_stream_mode
    # The signer never issues a longer life than verifiers accept (SIGNING_MAX_TTL_SECONDS).
    life = min(
        children_ttl(settings.origin_playlist_ttl_seconds, video.duration_seconds or 0),
        signer.max_ttl_seconds,
    )
    base = base_url(settings, request_base)
    prefix = playback_prefix(video.master_key)

    def url(path: str) -> str:
        if mode == "token":
            return signer.token_url(base, prefix, path, life)
        return signer.signed_url(base, path, life)

    previews = await thumbnails_key(res, video)
    return StreamUrls(
        thumbnails_url=url(previews) if previews else None,
        master_url=url(video.master_key),
        variants=[
            {
                "name": r.name,
                "bitrate": r.bandwidth,
                "average_bitrate": r.average_bandwidth,
                "resolution": f"{r.width}x{r.height}" if r.width else None,
                "url": url(r.playlist_key),
            }
            for r in renditions
        ],
        expires_in=life,
        mode=mode,
        expires_at=int(time.time()) + life,
    )
