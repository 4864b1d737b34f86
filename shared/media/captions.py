"""Captions: SRT and WebVTT read into cues, checked, and published as HLS subtitle renditions.

A caption file is checked whole before anything is stored: UTF-8 (a BOM is dropped), no NUL or
other control character, CRLF or CR line ends taken as LF, at most ``max_cues`` cues and
``LINE_MAX_CHARS`` characters a line, timestamps well formed, each cue ending after it starts,
cues in start order and none ending past the video's length plus ``DURATION_SLACK_SECONDS``.
SRT becomes WebVTT (its ``<font>`` and ``{\\an8}`` styling dropped, ``<i>``, ``<b>``, ``<u>``
kept).

Published, a caption is segmented WebVTT cut at the video's own segment boundaries (a cue
spanning a boundary is in both segments; players drop the copy), each segment starting with
``X-TIMESTAMP-MAP`` so that hls.js places cues on the fMP4 video's timeline, one VOD media
playlist per language, and one ``#EXT-X-MEDIA:TYPE=SUBTITLES`` line per language in the master
playlist with ``SUBTITLES="subs"`` on every variant (``with_subtitles``).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from shared.core.errors import AppError, UnsupportedMediaType

CaptionFormat = Literal["vtt", "srt"]

GROUP_ID = "subs"
# Cue ends may run this far past the video's length (credits timed against a longer cut).
DURATION_SLACK_SECONDS = 5.0
MAX_CUES = 20_000
# Copies of cues across segments, in all: a cue is in every segment it overlaps.
MAX_PLACEMENTS = 100_000
LINE_MAX_CHARS = 1_000
CUE_MAX_LINES = 16
LANGUAGE_MAX_CHARS = 35
LABEL_MAX_CHARS = 64
# fMP4 ladders start their timeline at 0: WebVTT time 0 is presentation time 0.
TIMESTAMP_MAP = "X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"
PLAYLIST_NAME = "index.m3u8"
WHOLE_NAME = "captions.vtt"

VTT_TYPES = frozenset({"text/vtt"})
SRT_TYPES = frozenset({"application/x-subrip", "text/srt", "application/srt", "text/x-srt"})
# Types that say nothing of the format: the text decides.
DETECTED_TYPES = frozenset({"", "text/plain", "application/octet-stream"})

# Control characters a caption never holds (tab and LF stay; CR is a line end).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_TIME = r"(?:(\d{1,3}):)?([0-5]\d):([0-5]\d)[.,](\d{3})"
_VTT_TIMING = re.compile(rf"^{_TIME}[ \t]+-->[ \t]+{_TIME}(?:[ \t]+(.*))?$")
_SRT_TIMING = re.compile(rf"^[ \t]*{_TIME}[ \t]*-->[ \t]*{_TIME}(?:[ \t]+.*)?[ \t]*$")
_VTT_SETTING = re.compile(r"(vertical|line|position|size|align|region):[A-Za-z0-9.%,:_-]{1,32}")
_SRT_KEPT_TAG = re.compile(r"</?[ibu]>", re.IGNORECASE)
_SRT_TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]{0,200}\}")
# BCP 47: language (2-3 or 5-8 letters), script, region, variants; private use and extensions
# are left out on purpose: they name nothing a player can show.
_LANGUAGE = re.compile(
    r"(?P<lang>[a-z]{2,3}|[a-z]{5,8})"
    r"(?:-(?P<script>[a-z]{4}))?"
    r"(?:-(?P<region>[a-z]{2}|\d{3}))?"
    r"(?P<variants>(?:-(?:[a-z\d]{5,8}|\d[a-z\d]{3}))*)"
)


class InvalidCaption(AppError):
    """The caption file or its language or label cannot be published as it is."""

    status = 422
    code = "invalid_caption"


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str  # WebVTT cue payload, lines joined by LF
    settings: str = ""


@dataclass(frozen=True)
class Track:
    """One published caption as the master playlist names it."""

    language: str
    name: str
    uri: str  # relative to the master playlist


@dataclass(frozen=True)
class Published:
    """A caption cut for HLS: the media playlist, its segments (name, text) and the whole file."""

    playlist: str
    segments: list[tuple[str, str]]
    whole: str
    cue_count: int


def language_tag(value: str) -> str:
    """``value`` as a BCP 47 tag in its usual case (``pt-BR``, ``zh-Hant``); InvalidCaption
    when it is not one."""
    match = _LANGUAGE.fullmatch(value.lower()) if len(value) <= LANGUAGE_MAX_CHARS else None
    if match is None:
        raise InvalidCaption(f"{value[:40]!r} is not a BCP 47 language tag such as fr, en, pt-BR")
    tag = match["lang"]
    if match["script"]:
        tag += "-" + match["script"].title()
    if match["region"]:
        tag += "-" + match["region"].upper()
    return tag + match["variants"]


def check_label(value: str) -> str:
    """A track name players list: one line of at most ``LABEL_MAX_CHARS``, no double quote
    (the master playlist quotes it)."""
    label = value.strip()
    if not label or len(label) > LABEL_MAX_CHARS:
        raise InvalidCaption(f"a label is 1 to {LABEL_MAX_CHARS} characters")
    if '"' in label or _CONTROL.search(label) or "\n" in label or "\t" in label:
        raise InvalidCaption("a label holds no double quote, tab or control character")
    return label


def declared_format(content_type: str | None) -> CaptionFormat | None:
    """The format ``Content-Type`` names; None for a type that leaves it to the text;
    UnsupportedMediaType for any other type."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in VTT_TYPES:
        return "vtt"
    if media_type in SRT_TYPES:
        return "srt"
    if media_type not in DETECTED_TYPES:
        raise UnsupportedMediaType(
            f"captions are text/vtt or application/x-subrip, not {media_type[:80]}"
        )
    return None


def decode(data: bytes) -> str:
    """The text of a caption file: UTF-8 without BOM, LF line ends, no control characters."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCaption(f"captions are UTF-8 text; byte {exc.start} is not UTF-8") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    found = _CONTROL.search(text)
    if found is not None:
        line = text.count("\n", 0, found.start()) + 1
        raise InvalidCaption(f"line {line} holds a control character (U+{ord(found[0]):04X})")
    return text


def _ms(hours: str | None, minutes: str, seconds: str, millis: str) -> int:
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each block of non-empty lines."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), 1):
        if len(line) > LINE_MAX_CHARS:
            raise InvalidCaption(f"line {number} is longer than {LINE_MAX_CHARS} characters")
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _payload(lines: list[str], at: int) -> str:
    if len(lines) > CUE_MAX_LINES:
        raise InvalidCaption(f"the cue at line {at} has more than {CUE_MAX_LINES} lines")
    return "\n".join(line.rstrip() for line in lines)


def _srt_text(line: str) -> str:
    """An SRT text line as WebVTT cue text: its i/b/u tags kept, other markup dropped, the
    characters WebVTT reserves escaped."""
    line = _ASS_OVERRIDE.sub("", line)
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match[0].lower())
        return f"\x00{len(kept) - 1}\x00"

    line = _SRT_KEPT_TAG.sub(keep, line)
    line = _SRT_TAG.sub("", line)
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m[1])], line)


def parse_srt(text: str, *, max_cues: int = MAX_CUES) -> list[Cue]:
    """The cues of an SRT file (numbered blocks of a timing line and text lines)."""
    cues: list[Cue] = []
    for at, lines in _blocks(text):
        if lines[0].strip().isdigit() and len(lines) > 1:
            at, lines = at + 1, lines[1:]
        timing = _SRT_TIMING.match(lines[0])
        if timing is None:
            raise InvalidCaption(f"line {at}: expected 00:00:01,000 --> 00:00:02,000")
        if len(cues) >= max_cues:
            raise InvalidCaption(f"more than {max_cues} cues")
        start, end = _ms(*timing.groups()[:4]), _ms(*timing.groups()[4:8])
        body = _payload([_srt_text(line) for line in lines[1:]], at)
        cues.append(Cue(start, end, body))
    return cues


def parse_vtt(text: str, *, max_cues: int = MAX_CUES) -> list[Cue]:
    """The cues of a WebVTT file; NOTE, STYLE and REGION blocks are left out."""
    blocks = _blocks(text)
    if not blocks or not re.fullmatch(r"WEBVTT(?:[ \t].*)?", blocks[0][1][0]):
        raise InvalidCaption("a WebVTT file starts with the line WEBVTT")
    header = blocks[0][1]
    if any("-->" in line for line in header[1:]):
        raise InvalidCaption("a blank line must follow the WEBVTT header before the first cue")
    cues: list[Cue] = []
    for at, lines in blocks[1:]:
        if lines[0].startswith(("NOTE", "STYLE", "REGION")) and "-->" not in lines[0]:
            continue
        if "-->" not in lines[0] and len(lines) > 1:
            at, lines = at + 1, lines[1:]  # the cue's identifier
        timing = _VTT_TIMING.match(lines[0].strip())
        if timing is None:
            raise InvalidCaption(f"line {at}: expected 00:00:01.000 --> 00:00:02.000")
        if len(cues) >= max_cues:
            raise InvalidCaption(f"more than {max_cues} cues")
        body_lines = lines[1:]
        if any("-->" in line for line in body_lines):
            raise InvalidCaption(f"the cue at line {at} holds '-->' in its text")
        # Settings a player would not understand are dropped rather than passed on.
        settings = " ".join(
            s for s in (timing[9] or "").split() if _VTT_SETTING.fullmatch(s) is not None
        )
        start, end = _ms(*timing.groups()[:4]), _ms(*timing.groups()[4:8])
        cues.append(Cue(start, end, _payload(body_lines, at), settings))
    return cues


def check_cues(cues: Sequence[Cue], media_seconds: float) -> None:
    """At least one cue; each ends after it starts, starts no earlier than the one before, and
    ends within the video's length plus ``DURATION_SLACK_SECONDS``."""
    if not cues:
        raise InvalidCaption("the file holds no cue")
    limit_ms = int((media_seconds + DURATION_SLACK_SECONDS) * 1000)
    previous = 0
    for number, cue in enumerate(cues, 1):
        if cue.end_ms <= cue.start_ms:
            raise InvalidCaption(f"cue {number} ends before it starts ({_stamp(cue.start_ms)})")
        if cue.start_ms < previous:
            raise InvalidCaption(
                f"cue {number} starts at {_stamp(cue.start_ms)}, before cue {number - 1}: "
                "cues must be in time order"
            )
        if cue.end_ms > limit_ms:
            raise InvalidCaption(
                f"cue {number} ends at {_stamp(cue.end_ms)}, past the video's {media_seconds:.1f} s"
            )
        previous = cue.start_ms


def read_caption(
    data: bytes,
    content_type: str | None,
    media_seconds: float,
    *,
    max_cues: int = MAX_CUES,
) -> tuple[CaptionFormat, list[Cue]]:
    """The format and checked cues of an uploaded caption file."""
    declared = declared_format(content_type)
    text = decode(data)
    fmt = declared or ("vtt" if text.startswith("WEBVTT") else "srt")
    cues = (
        parse_vtt(text, max_cues=max_cues) if fmt == "vtt" else parse_srt(text, max_cues=max_cues)
    )
    check_cues(cues, media_seconds)
    return fmt, cues


def _stamp(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _cue_text(cue: Cue) -> str:
    timing = f"{_stamp(cue.start_ms)} --> {_stamp(cue.end_ms)}"
    if cue.settings:
        timing += " " + cue.settings
    return f"{timing}\n{cue.text}\n" if cue.text else f"{timing}\n"


def webvtt(cues: Sequence[Cue], *, timestamp_map: bool = False) -> str:
    """A WebVTT document of ``cues`` (with ``X-TIMESTAMP-MAP``, as an HLS segment)."""
    header = f"WEBVTT\n{TIMESTAMP_MAP}\n" if timestamp_map else "WEBVTT\n"
    return header + "".join("\n" + _cue_text(cue) for cue in cues)


def segment_name(index: int) -> str:
    return f"seg_{index:05d}.vtt"


def publish(
    cues: Sequence[Cue], durations: Sequence[float], *, max_placements: int = MAX_PLACEMENTS
) -> Published:
    """``cues`` cut at the video's segment boundaries (``durations``, its EXTINF values), with
    the VOD media playlist naming the segments.

    A cue is written into every segment it overlaps; more than ``max_placements`` such copies
    in all (cues each spanning much of a long video) is InvalidCaption, counted before any
    segment is written.
    """
    if not durations:
        raise ValueError("the video has no segments")
    # Where each segment ends on the video's timeline, in milliseconds.
    ends = [round(total * 1000) for total in itertools.accumulate(durations)]
    spans: list[tuple[int, int]] = []
    for cue in cues:
        first = bisect.bisect_right(ends, cue.start_ms)
        last = min(bisect.bisect_left(ends, cue.end_ms), len(ends) - 1)
        spans.append((first, last))
    placements = sum(max(0, last - first + 1) for first, last in spans)
    if placements > max_placements:
        raise InvalidCaption(
            f"the cues would be copied into {placements} segments, more than {max_placements}: "
            "too many cues span too much of the video"
        )
    inside: list[list[Cue]] = [[] for _ in durations]
    for cue, (first, last) in zip(cues, spans, strict=True):
        for index in range(first, last + 1):
            inside[index].append(cue)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(max(durations)))}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    segments: list[tuple[str, str]] = []
    for index, duration in enumerate(durations):
        name = segment_name(index)
        segments.append((name, webvtt(inside[index], timestamp_map=True)))
        lines += [f"#EXTINF:{duration:.6f},", name]
    lines.append("#EXT-X-ENDLIST")
    return Published("\n".join(lines) + "\n", segments, webvtt(cues), len(cues))


def track_name(language: str, label: str | None, taken: set[str]) -> str:
    """The NAME a track is listed by: its label, else its language, made unique."""
    name = label or language
    if name in taken:
        name = f"{name} ({language})"
    taken.add(name)
    return name


def with_subtitles(master: str, tracks: Sequence[Track]) -> str:
    """The master playlist with an ``EXT-X-MEDIA`` line per track before its first variant and
    ``SUBTITLES`` on every variant; unchanged without tracks."""
    if not tracks:
        return master
    media = [
        f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{GROUP_ID}",NAME="{t.name}",'
        f'LANGUAGE="{t.language}",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI="{t.uri}"'
        for t in tracks
    ]
    out: list[str] = []
    for line in master.splitlines():
        if line.startswith("#EXT-X-MEDIA:") and "TYPE=SUBTITLES" in line:
            continue  # a master stored with subtitles of its own: ours replace them
        if line.startswith("#EXT-X-STREAM-INF:"):
            out += media
            media = []
            line = re.sub(r',SUBTITLES="[^"]*"', "", line) + f',SUBTITLES="{GROUP_ID}"'
        out.append(line)
    return "\n".join(out) + "\n"


# Where captions live: beside the ladder's runs, not in one, so a new run keeps them.
_CAPTION_PATH = re.compile(r"(videos/[^/]+/)(?:[^/]+/)*?(captions/[^/]+/[0-9a-f]+/[^/]+)")


def captions_prefix(video_prefix: str) -> str:
    """The folder of a video's captions (``videos/<id>/captions/``)."""
    return f"{video_prefix}captions/"


def version_prefix(video_prefix: str, language: str, version: str) -> str:
    """The folder of one stored version of a caption."""
    return f"{captions_prefix(video_prefix)}{language}/{version}/"


def track_uri(language: str, version: str) -> str:
    """The URI of a caption's playlist relative to the master playlist's folder."""
    return f"captions/{language}/{version}/{PLAYLIST_NAME}"


def stored_key(path: str) -> str:
    """The object a delivery path names: caption paths under the master's folder
    (``videos/<id>/hls/<run>/captions/...``, what ``track_uri`` resolves to, and so what a path
    token over that folder covers) are stored under ``videos/<id>/captions/...``; any other
    path is its own object."""
    if "/captions/" not in path:
        return path
    match = _CAPTION_PATH.fullmatch(path)
    return match[1] + match[2] if match else path
