"""Captions: SRT and WebVTT read, checked against hostile files, cut into HLS segments."""

from __future__ import annotations

import pytest

from shared.core.errors import UnsupportedMediaType
from shared.media import captions
from shared.media.captions import Cue, InvalidCaption, Track

SRT = (
    '1\n00:00:01,000 --> 00:00:03,500\n<font color="red">Bonjour</font> & <i>salut</i>\n\n'
    "2\n00:00:04,000 --> 00:00:06,000\n{\\an8}Au revoir\n"
)
VTT = (
    "WEBVTT - English\n\nNOTE made by hand\n\nSTYLE\n::cue { color: yellow }\n\n"
    "intro\n00:01.000 --> 00:03.500 align:start bogus:x line:90%\nHello\nthere\n\n"
    "00:00:04.000 --> 00:00:06.000\nGoodbye\n"
)
MASTER = (
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=900000,CODECS="avc1.64001f,mp4a.40.2"\n360p/index.m3u8\n'
    '#EXT-X-STREAM-INF:BANDWIDTH=300000,CODECS="avc1.64000d,mp4a.40.2"\n180p/index.m3u8\n'
)


def read(data: bytes | str, content_type: str | None = None, seconds: float = 12) -> list[Cue]:
    raw = data.encode() if isinstance(data, str) else data
    return captions.read_caption(raw, content_type, seconds)[1]


def test_srt_becomes_webvtt_with_its_markup_cleaned() -> None:
    fmt, cues = captions.read_caption(SRT.encode(), None, 12)
    assert fmt == "srt"
    assert cues == [
        Cue(1000, 3500, "Bonjour &amp; <i>salut</i>"),
        Cue(4000, 6000, "Au revoir"),
    ]
    assert captions.webvtt(cues) == (
        "WEBVTT\n\n00:00:01.000 --> 00:00:03.500\nBonjour &amp; <i>salut</i>\n\n"
        "00:00:04.000 --> 00:00:06.000\nAu revoir\n"
    )


def test_webvtt_keeps_cues_and_known_settings_and_skips_other_blocks() -> None:
    fmt, cues = captions.read_caption(VTT.encode(), "text/vtt; charset=utf-8", 12)
    assert fmt == "vtt"
    assert cues == [
        Cue(1000, 3500, "Hello\nthere", "align:start line:90%"),
        Cue(4000, 6000, "Goodbye"),
    ]


def test_bom_and_crlf_and_cr_line_ends_read_alike() -> None:
    plain = read(SRT)
    assert read(b"\xef\xbb\xbf" + SRT.replace("\n", "\r\n").encode()) == plain
    assert read(SRT.replace("\n", "\r")) == plain
    assert read("\ufeff" + VTT.replace("\n", "\r\n"), "text/vtt") == read(VTT, "text/vtt")


def test_the_format_comes_from_the_content_type_or_the_text() -> None:
    assert captions.declared_format("application/x-subrip") == "srt"
    assert captions.declared_format("text/vtt; charset=utf-8") == "vtt"
    assert captions.declared_format("text/plain") is None
    assert captions.declared_format(None) is None
    assert captions.read_caption(VTT.encode(), "text/plain", 12)[0] == "vtt"
    assert captions.read_caption(SRT.encode(), "application/octet-stream", 12)[0] == "srt"
    # Another type is refused before the body is decoded, whatever it holds.
    with pytest.raises(UnsupportedMediaType):
        captions.read_caption(b"\x89PNG\r\n\x1a\n\xff", "image/png", 12)
    # A file declared WebVTT must be one.
    with pytest.raises(InvalidCaption, match="starts with the line WEBVTT"):
        read(SRT, "text/vtt")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n", "not UTF-8"),
        (b"\xff\xfeW\x00E\x00", "not UTF-8"),
        ("1\n00:00:01,000 --> 00:00:02,000\nNUL\x00here\n", "control character"),
        ("1\n00:00:01,000 --> 00:00:02,000\nbell\x07\n", "control character"),
        ("1\n00:00:03,000 --> 00:00:02,000\nbackwards\n", "ends before it starts"),
        ("1\n00:00:02,000 --> 00:00:02,000\nempty span\n", "ends before it starts"),
        ("1\n00:00:01,000 --> 00:00:02,000\nx\n\n2\n00:00:00,500 --> 00:00:03,000\ny\n", "order"),
        ("1\n00:00:01,000 --> 00:01:00,000\ntoo long\n", "past the video"),
        ("1\n00:00:01 --> 00:00:02\nno millis\n", "expected 00:00:01,000"),
        ("1\n00:61:01,000 --> 00:61:02,000\nminute 61\n", "expected 00:00:01,000"),
        ("1\n00:00:01,000 -> 00:00:02,000\narrow\n", "expected 00:00:01,000"),
        ("1\n-00:00:01,000 --> 00:00:02,000\nnegative\n", "expected 00:00:01,000"),
        ("1\n99999:00:01,000 --> 00:00:02,000\nhuge hours\n", "expected 00:00:01,000"),
        ("", "no cue"),
        ("\n\n  \n", "no cue"),
        ("1\n00:00:01,000 --> 00:00:02,000\n" + "x" * 1001 + "\n", "longer than"),
        ("1\n00:00:01,000 --> 00:00:02,000\n" + "line\n" * 17, "more than 16 lines"),
        ("WEBVTT\n00:00:01.000 --> 00:00:02.000\nno blank line\n", "blank line"),
        ("WEBVTTX\n\n00:00:01.000 --> 00:00:02.000\nx\n", "WEBVTT"),
        ("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\na --> b\n", "'-->'"),
    ],
)
def test_hostile_files_are_refused_with_what_is_wrong(data: str | bytes, message: str) -> None:
    content_type = "text/vtt" if isinstance(data, str) and data.startswith("WEBVTT") else None
    with pytest.raises(InvalidCaption, match=message) as caught:
        read(data, content_type)
    assert caught.value.status == 422
    assert caught.value.body()["error"] == "invalid_caption"


def test_huge_cue_counts_are_refused() -> None:
    block = "1\n00:00:01,000 --> 00:00:01,001\nx\n\n"
    with pytest.raises(InvalidCaption, match="more than 20000 cues"):
        read(block * 30_000)
    with pytest.raises(InvalidCaption, match="more than 3 cues"):
        captions.read_caption((block * 4).encode(), None, 12, max_cues=3)


def test_a_cue_may_end_within_the_slack_past_the_video() -> None:
    assert read("1\n00:00:10,000 --> 00:00:16,500\ncredits\n", seconds=12)
    with pytest.raises(InvalidCaption):
        read("1\n00:00:10,000 --> 00:00:17,500\ncredits\n", seconds=12)


@pytest.mark.parametrize(
    ("given", "tag"),
    [("fr", "fr"), ("EN", "en"), ("pt-br", "pt-BR"), ("zh-hant-TW", "zh-Hant-TW"),
     ("es-419", "es-419"), ("sl-rozaj", "sl-rozaj"), ("yue", "yue")],
)  # fmt: skip
def test_language_tags_are_bcp47_in_their_usual_case(given: str, tag: str) -> None:
    assert captions.language_tag(given) == tag


@pytest.mark.parametrize(
    "given", ["", "f", "french!", "en_US", "en-", "-en", "x-private", "en-US-" + "a" * 40, "e1"]
)
def test_other_language_tags_are_refused(given: str) -> None:
    with pytest.raises(InvalidCaption, match="BCP 47"):
        captions.language_tag(given)


@pytest.mark.parametrize("label", ["", " ", 'say "hi"', "tab\there", "a" * 65, "bell\x07"])
def test_labels_the_master_cannot_quote_are_refused(label: str) -> None:
    with pytest.raises(InvalidCaption):
        captions.check_label(label)


def test_segments_follow_the_video_segments_and_carry_the_timestamp_map() -> None:
    cues = read(SRT)
    published = captions.publish(cues, [2.0, 2.0, 2.0, 1.5])
    assert published.cue_count == 2
    lines = published.playlist.splitlines()
    assert lines[:5] == [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    assert lines[-1] == "#EXT-X-ENDLIST"
    assert [line for line in lines if line.startswith("#EXTINF")] == [
        "#EXTINF:2.000000,", "#EXTINF:2.000000,", "#EXTINF:2.000000,", "#EXTINF:1.500000,",
    ]  # fmt: skip
    names = [name for name, _ in published.segments]
    assert names == [line for line in lines if not line.startswith("#")]
    texts = [text for _, text in published.segments]
    for text in texts:
        assert text.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n")
    # 1-3.5 s spans segments 0 and 1; 4-6 s is all of segment 2; the last segment is empty.
    assert ["Bonjour" in t for t in texts] == [True, True, False, False]
    assert ["Au revoir" in t for t in texts] == [False, False, True, False]
    assert "-->" not in texts[3]


def test_the_master_lists_each_track_and_every_variant_names_the_group() -> None:
    taken: set[str] = set()
    tracks = [
        Track("en", captions.track_name("en", None, taken), "captions/en/a1/index.m3u8"),
        Track("fr", captions.track_name("fr", "en", taken), "captions/fr/b2/index.m3u8"),
    ]
    served = captions.with_subtitles(MASTER, tracks)
    lines = served.splitlines()
    media = [line for line in lines if line.startswith("#EXT-X-MEDIA:")]
    assert media == [
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="en",LANGUAGE="en",DEFAULT=NO,'
        'AUTOSELECT=YES,FORCED=NO,URI="captions/en/a1/index.m3u8"',
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="en (fr)",LANGUAGE="fr",DEFAULT=NO,'
        'AUTOSELECT=YES,FORCED=NO,URI="captions/fr/b2/index.m3u8"',
    ]
    assert lines.index(media[-1]) < min(
        i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF")
    )
    inf = [line for line in lines if line.startswith("#EXT-X-STREAM-INF")]
    assert len(inf) == 2 and all(line.endswith(',SUBTITLES="subs"') for line in inf)
    # Served again from a master that already has them: the same, not doubled.
    assert captions.with_subtitles(served, tracks) == served
    assert captions.with_subtitles(MASTER, []) == MASTER


def test_caption_paths_under_any_run_name_the_objects_beside_the_runs() -> None:
    base = "videos/3f1c7f2e-0000-4000-8000-000000000001/"
    stored = base + "captions/pt-BR/0a1b2c/seg_00003.vtt"
    assert captions.stored_key(base + "hls/run-7/captions/pt-BR/0a1b2c/seg_00003.vtt") == stored
    assert captions.stored_key(base + "hls/captions/pt-BR/0a1b2c/seg_00003.vtt") == stored
    assert captions.stored_key(stored) == stored
    for other in (base + "hls/run-7/360p/seg_00001.m4s", base + "hls/run-7/master.m3u8"):
        assert captions.stored_key(other) == other
    # Only caption objects: a path that merely mentions the folder stays its own.
    odd = base + "hls/run-7/captions/index.m3u8"
    assert captions.stored_key(odd) == odd


def test_cues_copied_into_too_many_segments_are_refused_before_any_is_written() -> None:
    # One cue over the whole video is a copy per segment, as many as the video has.
    whole = captions.publish([Cue(0, 7_200_000, "all along")], [2.0] * 3600)
    assert all("all along" in text for _, text in whole.segments)
    # A thousand of them are not: the copies are counted first, and refused.
    overlapping = [Cue(0, 7_200_000, f"cue {i}") for i in range(1000)]
    with pytest.raises(InvalidCaption, match="3600000 segments, more than 100000"):
        captions.publish(overlapping, [2.0] * 3600)
