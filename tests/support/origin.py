"""The origin's tests: a real HLS ladder (``media.make_ladder``) stored as a ready video."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shared.db.models import Privacy, Rendition, Video, VideoState
from shared.runtime.resources import Resources
from tests.support.hls import variant_streams


@dataclass
class SeededVideo:
    id: uuid.UUID
    prefix: str
    master_key: str
    files: dict[str, Path] = field(default_factory=dict)  # object key -> local file

    def key(self, relative: str) -> str:
        return f"{self.prefix}hls/{relative}"


def _renditions(master: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for attrs, uri in variant_streams(master):
        width, height = (int(x) for x in attrs["RESOLUTION"].split("x"))
        bandwidth = int(attrs["BANDWIDTH"])
        found.append(
            {
                "name": uri.split("/", 1)[0],
                "kind": "video",
                "width": width,
                "height": height,
                "bandwidth": bandwidth,
                "average_bandwidth": int(attrs.get("AVERAGE-BANDWIDTH", bandwidth)),
                "codecs": attrs.get("CODECS", ""),
                "frame_rate": 25.0,
                "uri": uri,
            }
        )
    return found


async def seed_video(
    res: Resources,
    ladder: Path,
    *,
    title: str = "seeded",
    description: str = "",
    tags: tuple[str, ...] = (),
    seconds: float,
    state: VideoState = VideoState.ready,
    owner_id: uuid.UUID | None = None,
    privacy: Privacy = Privacy.public,
) -> SeededVideo:
    """Store the ladder under a new video's prefix and add its rows (owned by ``owner_id``)."""
    video_id = uuid.uuid4()
    prefix = f"videos/{video_id}/"
    seeded = SeededVideo(video_id, prefix, f"{prefix}hls/master.m3u8")
    store = res.need_store()
    for path in sorted(p for p in ladder.rglob("*") if p.is_file()):
        key = f"{prefix}hls/{path.relative_to(ladder).as_posix()}"
        await store.put_file(key, path)
        seeded.files[key] = path
    source = f"{prefix}source"
    await store.put_bytes(source, b"source bytes stand-in")
    renditions = _renditions((ladder / "master.m3u8").read_text())
    async with res.need_db().session() as session:
        session.add(
            Video(
                id=video_id,
                title=title,
                description=description,
                tags=list(tags),
                state=state.value,
                source_key=source,
                filename=f"{title}.mp4",
                duration_seconds=seconds,
                width=640,
                height=360,
                has_video=True,
                has_audio=True,
                master_key=seeded.master_key,
                poster_key=f"{prefix}hls/poster.jpg",
                owner_id=owner_id,
                privacy=privacy.value,
            )
        )
        await session.flush()
        for r in renditions:
            uri = str(r.pop("uri"))
            session.add(Rendition(video_id=video_id, playlist_key=f"{prefix}hls/{uri}", **r))
    return seeded
