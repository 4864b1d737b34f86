"""ffprobe helper: what a media file contains, or a NotMedia error fit to show its uploader.

ffprobe's own words stay in the server log: they name server paths and internals.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from shared.core.errors import NotMedia
from shared.media import tools
from shared.media.inputs import check_format, input_args

log = logging.getLogger(__name__)

NOT_MEDIA = "the file is not a recognised media file"


@dataclass(frozen=True)
class MediaInfo:
    duration_seconds: float
    format_name: str
    bit_rate: int | None
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_channels: int | None = None
    audio_sample_rate: int | None = None
    rotation: int = 0
    stream_count: int = 0

    @property
    def display_size(self) -> tuple[int, int] | None:
        """Width and height as shown, after applying rotation metadata."""
        if self.width is None or self.height is None:
            return None
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None
    return value or None


def _positive_int(value: object) -> int | None:
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number > 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(side["rotation"]) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(tag) % 360 if tag else 0


def parse_probe(data: dict[str, Any]) -> MediaInfo:
    """Turn ffprobe's JSON into MediaInfo; raise NotMedia when there is nothing playable."""
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise NotMedia("the file has no audio or video stream")
    duration = float(fmt.get("duration") or (video or audio or {}).get("duration") or 0)
    if duration <= 0:
        raise NotMedia("the file's duration could not be determined")
    return MediaInfo(
        duration_seconds=duration,
        format_name=str(fmt.get("format_name", "")),
        bit_rate=int(fmt["bit_rate"]) if fmt.get("bit_rate") else None,
        has_video=video is not None,
        has_audio=audio is not None,
        width=int(video["width"]) if video else None,
        height=int(video["height"]) if video else None,
        frame_rate=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
        if video
        else None,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_channels=int(audio["channels"]) if audio and audio.get("channels") else None,
        audio_sample_rate=_positive_int(audio.get("sample_rate")) if audio else None,
        rotation=_rotation(video) if video else 0,
        stream_count=len(streams),
    )


async def probe(
    path: str, *, label: str = "", timeout_seconds: float = 60, ffprobe: str = "ffprobe"
) -> MediaInfo:
    """Probe a local file; raise NotMedia unless it is playable media in an accepted container.

    ``label`` names the file in the log line that keeps ffprobe's error output.
    """
    try:
        done = await tools.run_to_end(
            [
                ffprobe,
                "-v",
                "error",
                # One decoding thread: probing decodes a frame or two, and a huge frame per thread
                # would multiply the memory a hostile file costs.
                "-threads",
                "1",
                *input_args(),
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
                "-i",
                path,
            ],
            timeout_seconds,
        )
    except TimeoutError:
        log.info("ffprobe ran past %s s on %s; killed", timeout_seconds, label or path)
        raise NotMedia("probing the file took too long") from None
    if done.returncode != 0:
        log.info(
            "ffprobe refused %s (%s): %s",
            label or path,
            tools.exit_words(done.returncode),
            done.stderr.replace("\n", " | ") or "no output",
        )
        raise NotMedia(NOT_MEDIA)
    try:
        data = json.loads(done.stdout or b"{}")
    except ValueError:
        log.warning("ffprobe printed no JSON for %s", label or path)
        raise NotMedia(NOT_MEDIA) from None
    info = parse_probe(data)
    check_format(info.format_name)
    return info
