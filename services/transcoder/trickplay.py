"""I-frame playlists (trick play) for the video rungs, made from the finished segments.

ffmpeg's HLS muxer cannot write them for fMP4 (its ``iframes_only`` flag only adds the tag), and
a byte range inside a rung's segments cannot hold a keyframe alone: the fragment's ``mdat``
starts with earlier frames, and a reader that joins the ranges (ffmpeg does) gets truncated
``mdat``s. So after the encode, one ffmpeg per rung copies the rung's keyframes, without
re-encoding, into ``iframes.mp4``: the ``noise`` bitstream filter drops every other packet and
the mp4 muxer writes one fragment (``moof`` + ``mdat``) per frame. Its top-level boxes are then
walked: everything before the first ``moof`` is the init section (``EXT-X-MAP`` with a
BYTERANGE), each ``moof`` + ``mdat`` one entry whose EXTINF lasts until the next keyframe (the
``tfdt`` and the sample's composition offset give its time) and the last until the rung ends.

The playlist is version 5: byte ranges and ``EXT-X-I-FRAMES-ONLY`` need 4, ``EXT-X-MAP`` in an
I-frames-only playlist 5 (RFC 8216, 7). BANDWIDTH is the peak of an entry's bits over its
interval, AVERAGE-BANDWIDTH all entries' bits over the rung's length; a last keyframe shown only
for a moment is rated over half the usual interval, so one short tail does not set the peak.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.media import hls, tools

log = logging.getLogger(__name__)

IFRAMES_PLAYLIST = "iframes.m3u8"
IFRAMES_FILE = "iframes.mp4"
PLAYLIST_VERSION = 5
# Boxes are at least a size and a type; a file with more top-level boxes than this is not ours.
MAX_TOP_LEVEL_BOXES = 1_000_000
# moov and moof are parsed in memory; ours are about a kilobyte and a hundred bytes.
MAX_HEADER_BOX_BYTES = 1 << 20
# Containers walked on the way to mdhd, tfdt and trun.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"moof", b"traf"}


class TrickPlayError(RuntimeError):
    """The I-frame file does not describe a usable I-frame playlist."""


@dataclass(frozen=True)
class Box:
    """An ISO BMFF box: its type, where it starts, its whole size and its header's size."""

    kind: bytes
    offset: int
    size: int
    header: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Fragment:
    """One ``moof`` + ``mdat``: where it starts, its bytes, its sample's presentation time."""

    offset: int
    length: int
    pts: int


@dataclass(frozen=True)
class IFrameFile:
    """What a playlist needs of an I-frame file: the init section, the timescale, the fragments."""

    init_length: int
    timescale: int
    fragments: tuple[Fragment, ...]


@dataclass(frozen=True)
class IFrame:
    """One entry of an I-frame playlist (times in seconds)."""

    offset: int
    length: int
    pts: float
    duration: float


@dataclass(frozen=True)
class IFrameStats:
    """What the master announces of one rung's I-frame playlist."""

    peak_bps: int
    average_bps: int


@dataclass(frozen=True)
class RungIFrames:
    """A rung's I-frame file (to store beside its playlist), playlist text and rates."""

    file: Path
    playlist: str
    stats: IFrameStats


Reader = Callable[[int, int], bytes]


def boxes(read: Reader, start: int, end: int, limit: int = MAX_TOP_LEVEL_BOXES) -> list[Box]:
    """The boxes laid end to end from ``start`` to ``end``, reading headers only.

    ``read(offset, count)`` returns up to ``count`` bytes. A size of 1 is followed by a 64-bit
    size, a size of 0 runs to ``end``; a box smaller than its header, past ``end`` or cut short
    is refused.
    """
    found: list[Box] = []
    at = start
    while at < end:
        if len(found) >= limit:
            raise TrickPlayError(f"more than {limit} boxes")
        header = read(at, 16)
        if len(header) < 8 or at + 8 > end:
            raise TrickPlayError(f"a box header at {at} is cut short")
        size, kind, length = int.from_bytes(header[:4], "big"), header[4:8], 8
        if size == 1:
            if len(header) < 16 or at + 16 > end:
                raise TrickPlayError(f"the 64-bit size of the box at {at} is cut short")
            size, length = int.from_bytes(header[8:16], "big"), 16
        elif size == 0:
            size = end - at
        if size < length:
            raise TrickPlayError(f"the {_name(kind)} box at {at} declares {size} bytes")
        if at + size > end:
            raise TrickPlayError(f"the {_name(kind)} box at {at} runs past the end ({end})")
        found.append(Box(kind, at, size, length))
        at += size
    return found


def _name(kind: bytes) -> str:
    return kind.decode("latin-1").encode("unicode_escape").decode()


def _children(data: bytes, box: Box) -> list[Box]:
    """The boxes inside ``box``, a container held whole in ``data`` from its first byte."""
    return boxes(lambda at, count: data[at : at + count], box.header, box.size, 10_000)


def _find(data: bytes, box: Box, path: Sequence[bytes]) -> tuple[Box, bytes] | None:
    """The first box along ``path`` under the container ``box`` (held in ``data``), with its
    bytes."""
    for child in _children(data, box):
        if child.kind != path[0]:
            continue
        body = data[child.offset : child.end]
        if len(path) == 1:
            return Box(child.kind, 0, child.size, child.header), body
        if child.kind in _CONTAINERS:
            found = _find(body, Box(child.kind, 0, child.size, child.header), path[1:])
            if found is not None:
                return found
    return None


def _field(body: bytes, at: int, size: int, what: str) -> int:
    if at + size > len(body):
        raise TrickPlayError(f"{what} is cut short")
    return int.from_bytes(body[at : at + size], "big")


def timescale(moov: bytes) -> int:
    """The media timescale (mdhd) of the first track of a ``moov`` box."""
    root = Box(b"moov", 0, len(moov), 8)
    found = _find(moov, root, (b"trak", b"mdia", b"mdhd"))
    if found is None:
        raise TrickPlayError("the moov has no trak/mdia/mdhd")
    mdhd, body = found
    version = _field(body, mdhd.header, 1, "mdhd")
    at = mdhd.header + 4 + (16 if version == 1 else 8)
    scale = _field(body, at, 4, "mdhd")
    if scale <= 0:
        raise TrickPlayError("the mdhd timescale is 0")
    return scale


def fragment_pts(moof: bytes) -> int:
    """Presentation time of the one sample of a ``moof`` box: its ``tfdt`` decode time plus the
    sample's composition offset (``trun``), in timescale units."""
    root = Box(b"moof", 0, len(moof), 8)
    tfdt_found = _find(moof, root, (b"traf", b"tfdt"))
    trun_found = _find(moof, root, (b"traf", b"trun"))
    if tfdt_found is None or trun_found is None:
        raise TrickPlayError("a moof without traf/tfdt or traf/trun")
    tfdt, body = tfdt_found
    version = _field(body, tfdt.header, 1, "tfdt")
    decode = _field(body, tfdt.header + 4, 8 if version == 1 else 4, "tfdt")
    trun, body = trun_found
    version = _field(body, trun.header, 1, "trun")
    flags = _field(body, trun.header + 1, 3, "trun")
    count = _field(body, trun.header + 4, 4, "trun")
    if count != 1:
        raise TrickPlayError(f"a fragment holds {count} samples, not one keyframe")
    at = trun.header + 8 + 4 * bin(flags & 0x005).count("1")  # data offset, first flags
    at += 4 * bin(flags & 0x700).count("1")  # the sample's duration, size, flags
    if not flags & 0x800:
        return decode
    offset = _field(body, at, 4, "trun")
    if version == 1 and offset >= 1 << 31:
        offset -= 1 << 32
    return decode + offset


def read_iframe_file(path: Path) -> IFrameFile:
    """The init section, timescale and fragments of a fragmented MP4 of keyframes.

    Every ``moof`` must be followed by its ``mdat``; what lies after the last fragment (an
    ``mfra`` index) is not an entry.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:

        def read(at: int, count: int) -> bytes:
            fh.seek(at)
            return fh.read(count)

        top = boxes(read, 0, size)
        moofs = [i for i, b in enumerate(top) if b.kind == b"moof"]
        if not moofs:
            raise TrickPlayError(f"{path.name} holds no fragment")
        moov = next((b for b in top[: moofs[0]] if b.kind == b"moov"), None)
        if moov is None:
            raise TrickPlayError(f"{path.name} has no moov before its first fragment")
        scale = timescale(_whole(read, moov))
        fragments: list[Fragment] = []
        for i in moofs:
            moof = top[i]
            if i + 1 >= len(top) or top[i + 1].kind != b"mdat":
                raise TrickPlayError(f"the moof at {moof.offset} is not followed by its mdat")
            pts = fragment_pts(_whole(read, moof))
            fragments.append(Fragment(moof.offset, top[i + 1].end - moof.offset, pts))
    return IFrameFile(top[moofs[0]].offset, scale, tuple(fragments))


def _whole(read: Reader, box: Box) -> bytes:
    if box.size > MAX_HEADER_BOX_BYTES:
        raise TrickPlayError(f"a {_name(box.kind)} box of {box.size} bytes")
    return read(box.offset, box.size)


def iframes(file: IFrameFile, length_seconds: float) -> list[IFrame]:
    """One entry per fragment; the last lasts until ``length_seconds`` after the first."""
    if not file.fragments:
        return []
    times = [f.pts / file.timescale for f in file.fragments]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise TrickPlayError("the keyframes' times do not increase")
    end = times[0] + length_seconds
    if end <= times[-1]:
        raise TrickPlayError(f"the last keyframe ({times[-1]:.3f} s) starts after the rung ends")
    return [
        IFrame(f.offset, f.length, t, round((times[i + 1] if i + 1 < len(times) else end) - t, 6))
        for i, (f, t) in enumerate(zip(file.fragments, times, strict=True))
    ]


def iframe_stats(entries: Sequence[IFrame]) -> IFrameStats:
    """Peak and average bit rate of an I-frame playlist's entries."""
    durations = [e.duration for e in entries if e.duration > 0]
    if not durations:
        raise TrickPlayError("no I-frame lasts any time")
    floor = 0.5 * statistics.median(durations)
    peak = max(e.length * 8 / max(e.duration, floor) for e in entries)
    average = sum(e.length for e in entries) * 8 / sum(durations)
    return IFrameStats(math.ceil(peak), math.ceil(average))


def iframe_playlist(entries: Sequence[IFrame], init_length: int, uri: str = IFRAMES_FILE) -> str:
    """The VOD I-frame media playlist of one rung, every range a part of ``uri``."""
    if not entries:
        raise TrickPlayError("a rung without keyframes has no I-frame playlist")
    target = max(1, math.ceil(max(e.duration for e in entries)))
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{PLAYLIST_VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{uri}",BYTERANGE="{init_length}@0"',
    ]
    for e in entries:
        lines += [f"#EXTINF:{e.duration:.6f},", f"#EXT-X-BYTERANGE:{e.length}@{e.offset}", uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def keyframes_command(playlist: Path, out: Path) -> list[str]:
    """ffmpeg copying the keyframes of the rung behind ``playlist`` into one fragment each."""
    return [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-i", str(playlist),
        "-map", "0:v:0", "-c", "copy", "-bsf:v", "noise=drop=not(key)",
        "-movflags", "+frag_every_frame+empty_moov+default_base_moof+skip_trailer",
        "-f", "mp4", str(out),
    ]  # fmt: skip


async def rung_iframes(folder: Path, timeout_seconds: float = 120) -> RungIFrames:
    """The I-frame file, playlist and rates of the finished rung written in ``folder``."""
    playlist = folder / "index.m3u8"
    text = playlist.read_text()
    if "#EXT-X-ENDLIST" not in text:
        # ffmpeg would read an unended playlist as live, from near its end.
        raise TrickPlayError(f"the playlist of {folder.name} is not ended")
    out = folder / IFRAMES_FILE
    done = await tools.run_to_end(keyframes_command(playlist, out), timeout_seconds)
    if done.returncode != 0:
        raise TrickPlayError(f"ffmpeg could not copy the keyframes of {folder.name}: {done.stderr}")
    file = read_iframe_file(out)
    entries = iframes(file, sum(hls.media_durations(text)))
    return RungIFrames(out, iframe_playlist(entries, file.init_length), iframe_stats(entries))


async def ladder_iframes(
    out: Path, rung_names: Sequence[str], timeout_seconds: float = 120
) -> dict[str, RungIFrames]:
    """``rung_iframes`` of every named rung under ``out``, made concurrently.

    A rung whose I-frames cannot be made is left out (logged): trick play is an extra, never
    a reason to fail the ladder.
    """
    found = await asyncio.gather(
        *(rung_iframes(out / name, timeout_seconds) for name in rung_names),
        return_exceptions=True,
    )
    kept: dict[str, RungIFrames] = {}
    for name, result in zip(rung_names, found, strict=True):
        if isinstance(result, TrickPlayError | TimeoutError | OSError):
            log.warning("rung %s gets no I-frame playlist: %s", name, result or "ffmpeg timed out")
        elif isinstance(result, BaseException):
            raise result
        else:
            kept[name] = result
    return kept
