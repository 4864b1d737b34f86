"""A strict HLS check of a stored ladder, independent of the code that wrote it.

It downloads every object of a ladder into a folder and checks, with its own parsing and
ffprobe/ffmpeg, what players and validators care about: tags, segment durations, keyframe
alignment across rungs, that each segment decodes on its own, and that the declared
BANDWIDTH / AVERAGE-BANDWIDTH match the bytes. Its playlist parsing also serves whatever else
reads master playlists (the origin tests' seeding, the load tests' viewers).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

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


def video_packets(path: Path | str) -> list[tuple[float, bool]]:
    """(pts seconds, keyframe) of every video packet ffprobe reads from ``path`` (or a URL)."""
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


# BCP 47 as RFC 5646 spells it (language, extlang, script, region, variants, extensions).
_BCP47 = re.compile(
    r"(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4,8})(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|\d{3}))?(?:-(?:[A-Za-z\d]{5,8}|\d[A-Za-z\d]{3}))*"
    r"(?:-[A-WY-Za-wy-z\d](?:-[A-Za-z\d]{2,8})+)*(?:-[Xx](?:-[A-Za-z\d]{1,8})+)?"
)


@dataclass
class SubtitleTrack:
    attrs: dict[str, str]
    url: str
    playlist: str
    segments: list[str]  # each segment's WebVTT text, in playlist order


def check_subtitles(
    master_url: str, master: str, fetch: Callable[[str], str], *, media_seconds: float
) -> list[SubtitleTrack]:
    """Subtitle renditions as a strict validator checks them; ``fetch`` reads a URL (the test
    asserts its status). Every variant names a declared SUBTITLES group and every group is
    named; NAMEs are unique in a group; LANGUAGE is BCP 47; each playlist is VOD with ENDLIST,
    every EXTINF within TARGETDURATION, its length the video's within one segment; every
    segment is WebVTT with an X-TIMESTAMP-MAP in its header."""
    lines = master.splitlines()
    media = [
        attributes(line)
        for line in lines
        if line.startswith("#EXT-X-MEDIA:") and "TYPE=SUBTITLES" in line
    ]
    assert media, "the master declares no subtitle rendition"
    groups = {m["GROUP-ID"] for m in media}
    named: set[str] = set()
    for attrs, _ in variant_streams(master):
        assert attrs.get("SUBTITLES") in groups, f"variant without a declared group: {attrs}"
        named.add(attrs["SUBTITLES"])
    assert named == groups, f"groups no variant names: {groups - named}"
    for group in groups:
        names = [m["NAME"] for m in media if m["GROUP-ID"] == group]
        assert len(names) == len(set(names)), f"NAME repeated in group {group}: {names}"
    tracks: list[SubtitleTrack] = []
    for attrs in media:
        assert _BCP47.fullmatch(attrs.get("LANGUAGE", "")), f"LANGUAGE is not BCP 47: {attrs}"
        for flag in ("DEFAULT", "AUTOSELECT"):
            assert attrs.get(flag, "NO") in ("YES", "NO"), attrs
        if attrs.get("DEFAULT") == "YES":
            assert attrs.get("AUTOSELECT") == "YES", f"DEFAULT=YES needs AUTOSELECT=YES: {attrs}"
        url = urljoin(master_url, attrs["URI"])
        playlist = fetch(url)
        body = playlist.splitlines()
        assert body[0] == "#EXTM3U", url
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in body and body[-1] == "#EXT-X-ENDLIST", playlist
        targets = [int(x.split(":", 1)[1]) for x in body if x.startswith("#EXT-X-TARGETDURATION:")]
        assert len(targets) == 1, playlist
        durations = [float(x[8:].split(",", 1)[0]) for x in body if x.startswith("#EXTINF:")]
        uris = [x.strip() for x in body if x.strip() and not x.startswith("#")]
        assert durations and len(uris) == len(durations), playlist
        assert all(round(d) <= targets[0] for d in durations), (targets, durations)
        assert abs(sum(durations) - media_seconds) <= targets[0], (sum(durations), media_seconds)
        segments = []
        for uri in uris:
            text = fetch(urljoin(url, uri))
            header = text.split("\n\n", 1)[0].splitlines()
            assert re.fullmatch(r"WEBVTT(?:[ \t].*)?", header[0]), f"{uri}: not WebVTT"
            maps = [line for line in header if line.startswith("X-TIMESTAMP-MAP=")]
            assert len(maps) == 1, f"{uri}: no X-TIMESTAMP-MAP in its header"
            fields = dict(item.split(":", 1) for item in maps[0].split("=", 1)[1].split(","))
            assert fields.keys() == {"MPEGTS", "LOCAL"} and fields["MPEGTS"].isdigit(), maps
            assert re.fullmatch(r"(?:\d{2,}:)?\d{2}:\d{2}\.\d{3}", fields["LOCAL"]), maps
            segments.append(text)
        tracks.append(SubtitleTrack(attrs, url, playlist, segments))
    return tracks


@dataclass
class IFrameEntry:
    uri: str
    offset: int
    length: int
    duration: float


@dataclass
class IFramePlaylist:
    init_uri: str
    init_offset: int
    init_length: int
    target: int
    entries: list[IFrameEntry]


def _byterange(value: str) -> tuple[int, int]:
    length, _, offset = value.partition("@")
    assert offset, f"{value}: every I-frame range names its offset"
    return int(length), int(offset)


def iframe_playlist(text: str) -> IFramePlaylist:
    """An I-frame playlist's init section and entries, checking its tags on the way."""
    assert text.startswith("#EXTM3U"), "not a playlist"
    assert "#EXT-X-I-FRAMES-ONLY" in text, "no EXT-X-I-FRAMES-ONLY"
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    version = int(re.search(r"#EXT-X-VERSION:(\d+)", text).group(1))  # type: ignore[union-attr]
    assert version >= 5, "EXT-X-MAP in an I-frames-only playlist needs version 5"
    target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))  # type: ignore[union-attr]
    maps = [attributes(x) for x in text.splitlines() if x.startswith("#EXT-X-MAP:")]
    assert len(maps) == 1 and "BYTERANGE" in maps[0], maps
    init_length, init_offset = _byterange(maps[0]["BYTERANGE"])
    entries: list[IFrameEntry] = []
    duration: float | None = None
    byterange: tuple[int, int] | None = None
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line.startswith("#EXT-X-BYTERANGE:"):
            byterange = _byterange(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            assert duration is not None and byterange is not None, f"{line}: no EXTINF/BYTERANGE"
            assert 0 < duration and round(duration) <= target, (duration, target)
            entries.append(IFrameEntry(line.strip(), byterange[1], byterange[0], duration))
            duration = byterange = None
    assert entries, "an I-frame playlist without entries"
    return IFramePlaylist(maps[0]["URI"], init_offset, init_length, target, entries)


def top_box(data: bytes, at: int) -> tuple[bytes, int]:
    """(type, size) of the ISO BMFF box at ``at`` of ``data`` (32- or 64-bit size)."""
    assert at + 8 <= len(data), f"no box header at {at}"
    size, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
    if size == 1:
        size = int.from_bytes(data[at + 8 : at + 16], "big")
    assert size >= 8 and at + size <= len(data), (kind, at, size, len(data))
    return kind, size


def frames(path: Path) -> list[tuple[bool, float]]:
    """(keyframe, pts seconds) of every video frame ffprobe decodes from ``path``."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0",
         "-show_entries", "frame=key_frame,pts_time", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and not out.stderr.strip(), (path.name, out.stderr)
    found = json.loads(out.stdout or "{}").get("frames") or []
    return [(f["key_frame"] == 1, float(f["pts_time"])) for f in found]


def decode_frames(source: str) -> int:
    """How many video frames ffmpeg decodes from a playlist (a file or a URL), asserting it
    reports no error."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostats", "-progress", "pipe:1", "-i", source,
         "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    counts = [int(x.split("=")[1]) for x in out.stdout.split() if x.startswith("frame=")]
    return max(counts, default=0)


def check_iframe_playlists(ladder: Ladder, tolerance: float = 0.10) -> int:
    """Every video variant has an I-frame playlist in the master, whose entries are the rung's
    keyframes, one each: the EXT-X-MAP range is the file's boxes before its first ``moof``, the
    entries' ranges follow it without gap or overlap and each is exactly one ``moof`` + ``mdat``
    that decodes alone (after the init) to one keyframe, at that keyframe's time; the EXTINFs
    add up to the rung's length within one GOP; ffmpeg decodes the whole playlist, one frame per
    entry, without error; BANDWIDTH and AVERAGE-BANDWIDTH match the bytes. Returns how many
    entries were checked."""
    lines = [x for x in ladder.master.splitlines() if x.startswith("#EXT-X-I-FRAME-STREAM-INF:")]
    streams = {attributes(x)["URI"]: attributes(x) for x in lines}
    checked = 0
    for v in ladder.variants:
        if "RESOLUTION" not in v.attrs:
            continue
        uri = f"{v.folder}/iframes.m3u8"
        assert uri in streams, f"{v.uri}: no EXT-X-I-FRAME-STREAM-INF"
        attrs = streams[uri]
        assert attrs["RESOLUTION"] == v.attrs["RESOLUTION"]
        assert attrs["CODECS"] == v.attrs["CODECS"].split(",")[0].strip()
        assert attrs["CODECS"].startswith("avc1.")
        playlist = iframe_playlist((ladder.root / uri).read_text())
        entries = playlist.entries
        assert {e.uri for e in entries} == {playlist.init_uri}, "one file holds every range"
        data = (ladder.root / v.folder / playlist.init_uri).read_bytes()
        assert playlist.init_offset == 0, playlist.init_offset
        kinds, at = [], 0
        while at < playlist.init_length:
            kind, size = top_box(data, at)
            kinds.append(kind)
            at += size
        assert at == playlist.init_length and b"moov" in kinds, kinds
        keyframes = keyframe_times(ladder, v)
        assert len(entries) == len(keyframes), (uri, len(entries), keyframes)
        gop = max((b - a for a, b in itertools.pairwise(keyframes)), default=0)
        assert abs(sum(e.duration for e in entries) - sum(v.durations)) <= max(gop, 0.1), uri
        init = data[: playlist.init_length]
        expected_at = playlist.init_length
        first_pts: float | None = None
        for entry, expected in zip(entries, keyframes, strict=True):
            assert entry.offset == expected_at, (entry, expected_at)
            expected_at += entry.length
            moof, moof_size = top_box(data, entry.offset)
            mdat, mdat_size = top_box(data, entry.offset + moof_size)
            assert (moof, mdat) == (b"moof", b"mdat") and moof_size + mdat_size == entry.length
            single = ladder.root / f"iframe-{uuid.uuid4().hex}.mp4"
            single.write_bytes(init + data[entry.offset : entry.offset + entry.length])
            try:
                decoded = frames(single)
            finally:
                single.unlink()
            assert len(decoded) == 1 and decoded[0][0], f"{entry}: {decoded}, not one keyframe"
            first_pts = decoded[0][1] if first_pts is None else first_pts
            assert abs(decoded[0][1] - first_pts - (expected - keyframes[0])) < 0.002, entry
            checked += 1
        assert decode_frames(str(ladder.root / uri)) == len(entries), uri
        rates = [e.length * 8 / e.duration for e in entries]
        total = sum(e.length for e in entries) * 8 / sum(e.duration for e in entries)
        assert math.isclose(int(attrs["AVERAGE-BANDWIDTH"]), total, rel_tol=tolerance), attrs
        # The last entry may be rated over a longer interval than its own (a short tail).
        peak = int(attrs["BANDWIDTH"])
        assert max(rates[:-1] or rates) * (1 - tolerance) <= peak <= max(rates) * (1 + tolerance)
        assert peak >= int(attrs["AVERAGE-BANDWIDTH"])
    return checked
