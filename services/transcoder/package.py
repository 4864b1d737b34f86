"""Turn ffmpeg's output folder into what players get: playlists with measured bitrates.

BANDWIDTH follows the HLS definition of the peak segment bit rate (RFC 8216, 4.3.4.2): the
highest bit rate of any run of consecutive segments lasting between 0.5 and 1.5 target
durations. AVERAGE-BANDWIDTH is every segment's bytes over the playlist's duration. Both are
measured from the segments actually written, so a player's rate decisions match the real bytes.
While a job runs, the master playlist carries the planned rates instead (nothing is measured
yet); the measured one replaces it when the ladder is complete.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.transcoder.ladder import Rung
from services.transcoder.trickplay import IFRAMES_PLAYLIST, IFrameStats
from shared.media.ffprobe import MediaInfo
from shared.media.hls import media_durations, referenced_uris

AAC_LC = "mp4a.40.2"
# High profile, level 4.0: what x264 writes for up to 1080p30 when the init segment is unreadable.
DEFAULT_AVC = "avc1.640028"


@dataclass(frozen=True)
class VariantStats:
    rung: Rung
    peak_bps: int
    average_bps: int
    codecs: str
    segment_count: int
    duration_seconds: float

    @property
    def playlist(self) -> str:
        return f"{self.rung.name}/index.m3u8"


def avc_codec(init_segment: bytes) -> str | None:
    """The RFC 6381 ``avc1.PPCCLL`` string from the avcC box of an init segment."""
    at = init_segment.find(b"avcC")
    if at < 0 or len(init_segment) < at + 8:
        return None
    profile, compat, level = init_segment[at + 5 : at + 8]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}"


def variant_codecs(rung: Rung, init_segment: bytes | None, has_audio: bool) -> str:
    """The CODECS attribute of one variant."""
    if rung.kind == "audio":
        return AAC_LC
    video = (avc_codec(init_segment) if init_segment else None) or DEFAULT_AVC
    return f"{video},{AAC_LC}" if has_audio else video


def init_segment(folder: Path) -> bytes | None:
    """The init segment (EXT-X-MAP) of the variant in ``folder``, once ffmpeg wrote it."""
    playlist = folder / "index.m3u8"
    if not playlist.exists():
        return None
    for line in playlist.read_text().splitlines():
        if line.startswith("#EXT-X-MAP:"):
            uri = referenced_uris(line)[0]
            path = folder / uri
            return path.read_bytes() if path.exists() else None
    return None


def target_duration(text: str) -> int:
    """EXT-X-TARGETDURATION of a media playlist (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#EXT-X-TARGETDURATION:"):
            return int(line.split(":", 1)[1])
    return 0


def peak_bitrate(sizes: list[int], durations: list[float], target_seconds: float) -> float:
    """Peak segment bit rate per RFC 8216: the best window of 0.5-1.5 target durations."""
    low, high = 0.5 * target_seconds, 1.5 * target_seconds
    best = 0.0
    for start in range(len(sizes)):
        total_bytes, total_seconds = 0, 0.0
        for end in range(start, len(sizes)):
            total_bytes += sizes[end]
            total_seconds += durations[end]
            if total_seconds > high:
                break
            if total_seconds >= low:
                best = max(best, total_bytes * 8 / total_seconds)
    if best == 0.0 and sum(durations) > 0:
        # Shorter than half a target duration in all: the only window is the whole playlist.
        best = sum(sizes) * 8 / sum(durations)
    return best


def segment_files(text: str) -> list[str]:
    """The media segment URIs of a playlist (not its EXT-X-MAP)."""
    return [u for u in referenced_uris(text) if u.endswith(".m4s")]


def measure_variant(out_dir: Path, rung: Rung, codecs: str) -> VariantStats:
    """Peak and average bit rate of one finished variant from its playlist and segments."""
    folder = out_dir / rung.name
    text = (folder / "index.m3u8").read_text()
    durations = media_durations(text)
    segments = segment_files(text)
    if not segments or len(segments) != len(durations):
        raise RuntimeError(f"variant {rung.name} has no segments or an inconsistent playlist")
    sizes = [(folder / name).stat().st_size for name in segments]
    total_seconds = sum(durations)
    peak = peak_bitrate(sizes, durations, target_duration(text) or max(durations))
    average = sum(sizes) * 8 / total_seconds
    return VariantStats(
        rung, math.ceil(peak), math.ceil(average), codecs, len(segments), total_seconds
    )


def planned_variant(rung: Rung, codecs: str) -> VariantStats:
    """What the master announces while the variant is still being written."""
    peak = (rung.maxrate_kbps + rung.audio_kbps) * 1000
    average = (rung.video_kbps + rung.audio_kbps) * 1000
    return VariantStats(rung, peak, average, codecs, 0, 0.0)


def master_playlist(
    stats: list[VariantStats],
    info: MediaInfo,
    iframes: Mapping[str, IFrameStats] | None = None,
) -> str:
    """The master playlist, highest rung first, then the I-frame playlists of ``iframes``
    (by rung name)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    ordered = sorted(stats, key=lambda s: s.peak_bps, reverse=True)
    for v in ordered:
        attrs = [f"BANDWIDTH={v.peak_bps}", f"AVERAGE-BANDWIDTH={v.average_bps}"]
        if v.rung.kind == "video":
            attrs.append(f"RESOLUTION={v.rung.width}x{v.rung.height}")
        attrs.append(f'CODECS="{v.codecs}"')
        if v.rung.kind == "video" and info.frame_rate:
            attrs.append(f"FRAME-RATE={info.frame_rate:.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(v.playlist)
    for v in ordered:
        trick = (iframes or {}).get(v.rung.name)
        if trick is None or v.rung.kind != "video":
            continue
        video_codec = v.codecs.split(",", 1)[0]
        attrs = [
            f"BANDWIDTH={trick.peak_bps}",
            f"AVERAGE-BANDWIDTH={trick.average_bps}",
            f'CODECS="{video_codec}"',
            f"RESOLUTION={v.rung.width}x{v.rung.height}",
            f'URI="{iframes_playlist(v.rung)}"',
        ]
        lines.append("#EXT-X-I-FRAME-STREAM-INF:" + ",".join(attrs))
    return "\n".join(lines) + "\n"


def iframes_playlist(rung: Rung) -> str:
    """Where a video rung's I-frame playlist lives, relative to the master."""
    return f"{rung.name}/{IFRAMES_PLAYLIST}"


def vod_playlist(text: str) -> str:
    """The finished EVENT playlist as a VOD playlist: same segments, ended."""
    lines = [
        "#EXT-X-PLAYLIST-TYPE:VOD" if line.startswith("#EXT-X-PLAYLIST-TYPE:") else line
        for line in text.strip().splitlines()
    ]
    if "#EXT-X-ENDLIST" not in lines:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def content_type(name: str) -> str:
    """The Content-Type an output file is stored with."""
    if name.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if name.endswith(".m4s"):
        return "video/iso.segment"
    if name.endswith(".mp4"):
        return "video/mp4"
    if name.endswith(".jpg"):
        return "image/jpeg"
    if name.endswith(".vtt"):
        return "text/vtt"
    if name.endswith(".json"):
        return "application/json"
    return "application/octet-stream"
