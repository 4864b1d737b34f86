"""A strict HLS check of a stored ladder, independent of the code that wrote it.

It downloads every object of a ladder into a folder and checks, with its own parsing and
ffprobe/ffmpeg, what players and validators care about: tags, segment durations, keyframe
alignment across rungs, that each segment decodes on its own, and that the declared
BANDWIDTH / AVERAGE-BANDWIDTH match the bytes. Its playlist parsing also serves whatever else
reads master playlists (the origin tests' seeding, the load tests' viewers).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.storage import ObjectStore

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(line: str) -> dict[str, str]:
    """The attribute list of a tag line, quotes removed."""
    return {k: v.strip('"') for k, v in _ATTR.findall(line.split(":", 1)[1])}


def variant_streams(master: str) -> list[tuple[dict[str, str], str]]:
    """(attributes, URI) of every EXT-X-STREAM-INF of a master playlist, in playlist order."""
    lines = master.splitlines()
    return [
        (attributes(line), lines[i + 1].strip())
        for i, line in enumerate(lines)
        if line.startswith("#EXT-X-STREAM-INF:")
    ]


@dataclass
class Variant:
    uri: str
    attrs: dict[str, str]
    text: str = ""
    target: int = 0
    durations: list[float] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    init: str | None = None

    @property
    def folder(self) -> str:
        return self.uri.rsplit("/", 1)[0]


@dataclass
class Ladder:
    root: Path
    master: str
    variants: list[Variant]


async def download_ladder(store: ObjectStore, prefix: str, into: Path) -> Path:
    """Copy every object under ``prefix`` into ``into``; returns the folder."""
    for info in await store.list(prefix):
        path = into / info.key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        await store.download_file(info.key, path)
    return into


def parse_ladder(root: Path) -> Ladder:
    """Read the master playlist and every variant playlist under ``root``."""
    master = (root / "master.m3u8").read_text()
    variants = [Variant(uri, attrs) for attrs, uri in variant_streams(master)]
    for v in variants:
        v.text = (root / v.uri).read_text()
        for line in v.text.splitlines():
            if line.startswith("#EXT-X-TARGETDURATION:"):
                v.target = int(line.split(":", 1)[1])
            elif line.startswith("#EXTINF:"):
                v.durations.append(float(line[8:].split(",", 1)[0]))
            elif line.startswith("#EXT-X-MAP:"):
                v.init = attributes(line)["URI"]
            elif line and not line.startswith("#"):
                v.segments.append(line.strip())
    return Ladder(root, master, variants)


def check_tags(ladder: Ladder, *, video: bool) -> None:
    """Master and media playlist tags a strict validator requires."""
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in ladder.master
    assert ladder.variants, "master lists no variants"
    for v in ladder.variants:
        for name in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS"):
            assert name in v.attrs, f"{v.uri}: no {name}"
        if video:
            assert re.fullmatch(r"\d+x\d+", v.attrs["RESOLUTION"]), v.attrs
            assert float(v.attrs["FRAME-RATE"]) > 0
            assert v.attrs["CODECS"].startswith("avc1.")
        else:
            assert v.attrs["CODECS"] == "mp4a.40.2"
        assert v.init, f"{v.uri}: no EXT-X-MAP"
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in v.text and v.text.rstrip().endswith("#EXT-X-ENDLIST")
        assert v.segments and len(v.segments) == len(v.durations)
        for d in v.durations:
            assert v.target >= round(d), f"{v.uri}: EXTINF {d} above target {v.target}"


def measured_rates(ladder: Ladder, v: Variant) -> tuple[float, float]:
    """(peak, average) bit rate of a variant, by the RFC 8216 definitions."""
    sizes = [(ladder.root / v.folder / s).stat().st_size for s in v.segments]
    peak = 0.0
    for start in range(len(sizes)):
        total, seconds = 0, 0.0
        for end in range(start, len(sizes)):
            total += sizes[end]
            seconds += v.durations[end]
            if 0.5 * v.target <= seconds <= 1.5 * v.target:
                peak = max(peak, total * 8 / seconds)
    average = sum(sizes) * 8 / sum(v.durations)
    return peak or average, average


def check_bandwidth(ladder: Ladder, tolerance: float = 0.10) -> None:
    """Declared BANDWIDTH and AVERAGE-BANDWIDTH within ``tolerance`` of the measured rates."""
    for v in ladder.variants:
        peak, average = measured_rates(ladder, v)
        declared_peak = int(v.attrs["BANDWIDTH"])
        declared_avg = int(v.attrs["AVERAGE-BANDWIDTH"])
        assert math.isclose(declared_peak, peak, rel_tol=tolerance), (v.uri, declared_peak, peak)
        assert math.isclose(declared_avg, average, rel_tol=tolerance), (
            v.uri,
            declared_avg,
            average,
        )


def video_packets(path: Path) -> list[tuple[float, bool]]:
    """(pts seconds, keyframe) of every video packet ffprobe reads from ``path``."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    packets = json.loads(out.stdout)["packets"]
    return [(float(p["pts_time"]), "K" in p["flags"]) for p in packets]


def keyframe_times(ladder: Ladder, v: Variant) -> list[float]:
    """Presentation times of the keyframes of a variant, read through its playlist."""
    return sorted(t for t, key in video_packets(ladder.root / v.uri) if key)


def check_segments_decode(ladder: Ladder, v: Variant, *, video: bool) -> None:
    """Every segment decodes on its own (init + segment), starting on a keyframe."""
    assert v.init is not None
    init = (ladder.root / v.folder / v.init).read_bytes()
    for name in v.segments:
        single = ladder.root / f"single-{uuid.uuid4().hex}.mp4"
        single.write_bytes(init + (ladder.root / v.folder / name).read_bytes())
        try:
            decoded = subprocess.run(
                ["ffmpeg", "-v", "error", "-i", str(single), "-map", "0", "-f", "null", "-"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert decoded.returncode == 0 and not decoded.stderr.strip(), (name, decoded.stderr)
            if video:
                packets = video_packets(single)
                assert packets and packets[0][1], f"{v.uri} {name} does not start on a keyframe"
        finally:
            single.unlink()


def decode_variant(ladder: Ladder, v: Variant) -> float:
    """Decode a whole variant through its playlist; returns the decoded media seconds."""
    return decode_stream(str(ladder.root / v.uri))


def decode_stream(source: str) -> float:
    """Decode every stream of a playlist (a file or a URL) with ffmpeg; the decoded seconds."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostats",
            "-progress",
            "pipe:1",
            "-i",
            source,
            "-map",
            "0",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    times = [int(x.split("=")[1]) for x in out.stdout.split() if x.startswith("out_time_us=")]
    return max(times) / 1e6 if times else 0.0
