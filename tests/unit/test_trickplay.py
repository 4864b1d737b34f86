"""I-frame playlists from the boxes of a keyframes-only fragmented MP4, and the preview
sprites' layout."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from services.transcoder.ladder import Rung
from services.transcoder.package import VariantStats, master_playlist
from services.transcoder.previews import plan_sprites, thumbnails_vtt
from services.transcoder.trickplay import (
    Box,
    Fragment,
    IFrame,
    IFrameFile,
    IFrameStats,
    TrickPlayError,
    boxes,
    fragment_pts,
    iframe_playlist,
    iframe_stats,
    iframes,
    keyframes_command,
    ladder_iframes,
    read_iframe_file,
    timescale,
)
from shared.media.ffprobe import MediaInfo
from shared.media.thumbnails import last_cue_end, rewrite_thumbnails


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


def moov(scale: int, version: int = 0) -> bytes:
    times = bytes(16 if version == 1 else 8)
    mdhd = full_box(b"mdhd", version, 0, times + struct.pack(">I", scale) + bytes(12))
    trak = box(b"trak", box(b"tkhd", bytes(84)) + box(b"mdia", box(b"hdlr", bytes(25)) + mdhd))
    return box(b"moov", box(b"mvhd", bytes(100)) + trak)


def moof(decode: int, cto: int | None = None, *, samples: int = 1, v1: bool = True) -> bytes:
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", decode))
    if not v1:
        tfdt = full_box(b"tfdt", 0, 0, struct.pack(">I", decode))
    flags = 0x001 | 0x200 | (0x800 if cto is not None else 0)
    sample = struct.pack(">I", 500) + (struct.pack(">i", cto) if cto is not None else b"")
    trun = full_box(b"trun", 1, flags, struct.pack(">Ii", samples, 120) + sample * samples)
    traf = box(b"traf", full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1)) + tfdt + trun)
    return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", 1)) + traf)


def read(data: bytes) -> list[Box]:
    return boxes(lambda at, count: data[at : at + count], 0, len(data))


def test_boxes_read_32_and_64_bit_sizes_and_a_last_box_to_the_end() -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 20) + bytes(20)
    to_end = struct.pack(">I4s", 0, b"mdat") + bytes(30)
    data = box(b"moof", bytes(8)) + large + to_end
    assert read(data) == [
        Box(b"moof", 0, 16, 8),
        Box(b"mdat", 16, 36, 16),
        Box(b"mdat", 52, 38, 8),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (box(b"moof", bytes(8)) + struct.pack(">I4s", 3, b"mdat") + bytes(40), "declares 3"),
        (struct.pack(">I4sQ", 1, b"mdat", 12) + bytes(8), "declares 12"),  # under its header
        (box(b"moof", bytes(8)) + struct.pack(">I4s", 5000, b"mdat") + bytes(10), "past the end"),
        (struct.pack(">I4sQ", 1, b"mdat", 1 << 62) + bytes(8), "past the end"),
        (box(b"ftyp", bytes(8)) + b"\x00\x00\x00", "cut short"),  # a header cut in three bytes
        (struct.pack(">I4s", 1, b"mdat") + bytes(4), "64-bit size"),
    ],
)
def test_hostile_boxes_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(TrickPlayError, match=reason):
        read(data)


def test_a_file_of_tiny_boxes_stops_at_the_bound() -> None:
    data = box(b"free") * 20
    with pytest.raises(TrickPlayError, match="more than 10 boxes"):
        boxes(lambda at, count: data[at : at + count], 0, len(data), limit=10)


@pytest.mark.parametrize("version", [0, 1])
def test_timescale_comes_from_the_first_tracks_mdhd(version: int) -> None:
    assert timescale(moov(12_800, version)) == 12_800


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (box(b"moov", box(b"mvhd", bytes(100))), "no trak/mdia/mdhd"),
        (moov(0), "timescale is 0"),
        (box(b"moov", box(b"trak", box(b"mdia", full_box(b"mdhd", 0, 0, bytes(4))))), "cut"),
    ],
)
def test_a_moov_without_a_usable_timescale_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(TrickPlayError, match=reason):
        timescale(data)


def test_a_fragments_time_is_its_decode_time_plus_the_composition_offset() -> None:
    assert fragment_pts(moof(25_600)) == 25_600
    assert fragment_pts(moof(25_600, 1024)) == 26_624
    assert fragment_pts(moof(25_600, -512)) == 25_088  # version 1: a signed offset
    assert fragment_pts(moof(7, v1=False)) == 7


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (moof(0, samples=2), "holds 2 samples"),
        (moof(0, samples=0), "holds 0 samples"),
        (box(b"moof", box(b"traf", full_box(b"tfdt", 1, 0, bytes(8)))), "without traf"),
        (moof(0)[:-4], "past the end"),  # the sample's fields cut off
    ],
)
def test_a_moof_that_is_not_one_keyframe_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(TrickPlayError, match=reason):
        fragment_pts(data)


def iframe_file(tmp_path: Path, *parts: bytes) -> Path:
    path = tmp_path / "iframes.mp4"
    path.write_bytes(b"".join(parts))
    return path


def test_the_init_is_what_precedes_the_first_fragment_and_each_entry_a_whole_fragment(
    tmp_path: Path,
) -> None:
    init = box(b"ftyp", bytes(20)) + moov(1000)
    first, second = moof(0, 80), moof(2000, 80)
    path = iframe_file(
        tmp_path, init, first, box(b"mdat", bytes(900)), second, box(b"mdat", bytes(700)),
        box(b"mfra", bytes(16)),
    )  # fmt: skip
    parsed = read_iframe_file(path)
    second_at = len(init) + len(first) + 908
    assert parsed == IFrameFile(
        len(init),
        1000,
        (
            Fragment(len(init), len(first) + 908, 80),
            Fragment(second_at, len(second) + 708, 2080),
        ),
    )
    entries = iframes(parsed, length_seconds=3.5)
    assert entries == [
        IFrame(len(init), len(first) + 908, 0.08, 2.0),
        IFrame(second_at, len(second) + 708, 2.08, 1.5),
    ]
    text = iframe_playlist(entries, parsed.init_length)
    assert text.splitlines() == [
        "#EXTM3U",
        "#EXT-X-VERSION:5",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="iframes.mp4",BYTERANGE="{len(init)}@0"',
        "#EXTINF:2.000000,",
        f"#EXT-X-BYTERANGE:{len(first) + 908}@{len(init)}",
        "iframes.mp4",
        "#EXTINF:1.500000,",
        f"#EXT-X-BYTERANGE:{len(second) + 708}@{second_at}",
        "iframes.mp4",
        "#EXT-X-ENDLIST",
    ]


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        ((box(b"ftyp", bytes(20)), moov(1000)), "no fragment"),
        ((box(b"ftyp", bytes(20)), moof(0), box(b"mdat", bytes(9))), "no moov"),
        ((moov(1000), moof(0), box(b"free"), box(b"mdat", bytes(9))), "not followed by its mdat"),
        ((moov(1000), moof(0)), "not followed by its mdat"),
        # Size 0: the moof runs to the end of the file, so no mdat follows it.
        ((moov(1000), struct.pack(">I4s", 0, b"moof") + bytes(40)), "not followed by its mdat"),
        ((moov(1000), moof(0), struct.pack(">I4s", 900, b"mdat")), "past the end"),
        ((moov(1000), box(b"moof", bytes(2 << 20)), box(b"mdat")), "a moof box of"),
        ((b"",), "no fragment"),
    ],
)
def test_hostile_i_frame_files_are_refused(
    tmp_path: Path, parts: tuple[bytes, ...], reason: str
) -> None:
    with pytest.raises(TrickPlayError, match=reason):
        read_iframe_file(iframe_file(tmp_path, *parts))


def test_keyframe_times_must_increase_and_start_before_the_end() -> None:
    def file(*times: int) -> IFrameFile:
        return IFrameFile(100, 1000, tuple(Fragment(100 + i, 1, t) for i, t in enumerate(times)))

    with pytest.raises(TrickPlayError, match="do not increase"):
        iframes(file(0, 2000, 2000), 6.0)
    with pytest.raises(TrickPlayError, match="after the rung ends"):
        iframes(file(0, 2000, 4000), 4.0)
    assert iframes(file(), 4.0) == []
    # Times are relative to the first keyframe: an edit-list shift does not change them.
    assert [e.duration for e in iframes(file(500, 2500), 4.0)] == [2.0, 2.0]


def test_a_rung_without_keyframes_has_no_playlist() -> None:
    with pytest.raises(TrickPlayError):
        iframe_playlist([], 100)
    with pytest.raises(TrickPlayError):
        iframe_stats([])


def test_bandwidth_is_the_peak_rate_with_a_short_tail_rated_over_half_the_interval() -> None:
    entries = [
        IFrame(100, 10_000, 0.0, 2.0),
        IFrame(10_100, 20_000, 2.0, 2.0),
        IFrame(30_100, 10_000, 4.0, 0.04),  # rated over 1 s, not 0.04 s
    ]
    stats = iframe_stats(entries)
    assert stats.peak_bps == 80_000
    assert stats.average_bps == pytest.approx(40_000 * 8 / 4.04, abs=1)


def test_the_keyframes_are_copied_not_encoded(tmp_path: Path) -> None:
    cmd = keyframes_command(tmp_path / "index.m3u8", tmp_path / "iframes.mp4")
    assert cmd[cmd.index("-c") + 1] == "copy" and "noise=drop=not(key)" in cmd
    assert "+frag_every_frame" in cmd[cmd.index("-movflags") + 1]


def test_master_lists_the_i_frame_playlists_of_video_rungs() -> None:
    rung = Rung("360p", "video", 640, 360, 800, 128)
    info = MediaInfo(6.0, "mp4", None, True, True, 640, 360, 25.0)
    stats = [VariantStats(rung, 1_000_000, 900_000, "avc1.64001e,mp4a.40.2", 2, 6.0)]
    master = master_playlist(stats, info, {"360p": IFrameStats(120_000, 50_000)})
    line = next(x for x in master.splitlines() if x.startswith("#EXT-X-I-FRAME-STREAM-INF:"))
    assert line == (
        "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=120000,AVERAGE-BANDWIDTH=50000,"
        'CODECS="avc1.64001e",RESOLUTION=640x360,URI="360p/iframes.m3u8"'
    )
    assert "I-FRAME" not in master_playlist(stats, info)


def test_sprites_stay_bounded_and_cues_cover_the_whole_video() -> None:
    short = plan_sprites(12.04, 1280, 720)
    assert short is not None
    assert (short.interval_seconds, short.tiles, short.columns, short.rows) == (1, 13, 10, 2)
    assert (short.tile_width, short.tile_height, short.sheets) == (160, 90, 1)
    long = plan_sprites(2 * 3600, 1920, 1080)
    assert long is not None and long.tiles <= 300 and long.sheets == 3
    portrait = plan_sprites(5, 360, 640)
    assert portrait is not None and portrait.tile_height == 284
    assert plan_sprites(0, 640, 360) is None and plan_sprites(10, 0, 0) is None

    vtt = thumbnails_vtt(short)
    cues = re.findall(r"(\S+) --> (\S+)\n(\S+)", vtt)
    assert vtt.startswith("WEBVTT\n") and len(cues) == 13
    assert cues[0] == ("00:00:00.000", "00:00:01.000", "sprites-0.jpg#xywh=0,0,160,90")
    assert cues[11][2] == "sprites-0.jpg#xywh=160,90,160,90"
    assert cues[-1][1] == "00:00:12.040" and last_cue_end(vtt) == pytest.approx(12.04)
    assert thumbnails_vtt(long).count("sprites-2.jpg") > 0


def test_thumbnail_rewrite_touches_only_cue_payloads() -> None:
    vtt = "WEBVTT\n\nNOTE a-b\n\n1\n00:00.000 --> 00:01.000\nsprites-0.jpg#xywh=0,0,1,1\n"
    out = rewrite_thumbnails(vtt, lambda uri: uri.upper())
    assert out.splitlines() == [
        "WEBVTT",
        "",
        "NOTE a-b",
        "",
        "1",
        "00:00.000 --> 00:01.000",
        "SPRITES-0.JPG#XYWH=0,0,1,1",
    ]
    assert last_cue_end("WEBVTT\n\nbad --> stamp\n") == 0.0


async def test_a_rung_without_usable_i_frames_is_left_out_not_failed(tmp_path: Path) -> None:
    rung = tmp_path / "360p"
    rung.mkdir()
    # Not ended: ffmpeg would read it as live, so nothing is started for it.
    (rung / "index.m3u8").write_text("#EXTM3U\n#EXTINF:4.0,\nseg_00000.m4s\n")
    assert await ladder_iframes(tmp_path, ["360p", "720p"]) == {}  # 720p: no folder at all
