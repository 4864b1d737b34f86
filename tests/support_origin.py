"""Origin test helpers: a real HLS ladder made by ffmpeg, stored and registered as a ready video."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.core.settings import BaseServiceSettings
from shared.core.signing import Signer
from shared.db.models import Rendition, Video, VideoState
from shared.runtime.resources import Resources
from tests.support import VSP, Processes, free_port

_STREAM_INF = re.compile(r"#EXT-X-STREAM-INF:(.*)")
_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


@dataclass
class SeededVideo:
    id: uuid.UUID
    prefix: str
    master_key: str
    files: dict[str, Path] = field(default_factory=dict)  # object key -> local file

    def key(self, relative: str) -> str:
        return f"{self.prefix}hls/{relative}"


def make_ladder(folder: Path, *, seconds: int, segment_seconds: int = 2) -> Path:
    """Two-rung fMP4 HLS (640x360 and 320x180, AAC) of a test pattern; cached by parameters."""
    out = folder / f"ladder-{seconds}s-{segment_seconds}s"
    if (out / "master.m3u8").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gop = 25 * segment_seconds
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-filter_complex", "[0:v]split=2[a][b];[a]null[v0];[b]scale=320:180[v1]",
            "-map", "[v0]", "-map", "1:a", "-map", "[v1]", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-b:v:0", "900k", "-b:v:1", "250k", "-c:a", "aac", "-b:a", "64k",
            "-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
            "-hls_segment_filename", str(tmp / "%v" / "seg_%05d.m4s"),
            "-master_pl_name", "master.m3u8",
            "-var_stream_map", "v:0,a:0,name:360p v:1,a:1,name:180p",
            str(tmp / "%v" / "index.m3u8"),
        ],
        check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=1",
         "-frames:v", "1", str(tmp / "poster.jpg")],
        check=True,
    )  # fmt: skip
    tmp.rename(out)
    return out


def _renditions(master: str) -> list[dict[str, object]]:
    lines = master.splitlines()
    found: list[dict[str, object]] = []
    for i, line in enumerate(lines):
        match = _STREAM_INF.match(line)
        if not match:
            continue
        attrs = {k: v.strip('"') for k, v in _ATTR.findall(match.group(1))}
        width, height = (int(x) for x in attrs["RESOLUTION"].split("x"))
        uri = lines[i + 1].strip()
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
) -> SeededVideo:
    """Store the ladder under a new video's prefix and add its rows."""
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
            )
        )
        await session.flush()
        for r in renditions:
            uri = str(r.pop("uri"))
            session.add(Rendition(video_id=video_id, playlist_key=f"{prefix}hls/{uri}", **r))
    return seeded


def signer_of(settings: BaseServiceSettings) -> Signer:
    return Signer(settings.signing_keys, settings.signing_key_id)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def start_origin(
    manager: Processes, *, env: dict[str, str] | None = None, timeout: float = 120
) -> str:
    """``vsp serve origin`` on a free port; a generous start timeout for a busy machine."""
    port = free_port()
    proc = manager.start(
        "origin",
        [*VSP, "serve", "origin", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/readyz",
        env=env,
        timeout=timeout,
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc.url
