"""The load tests' playback clock: startup, stalls, rebuffer ratio and rung choice."""

from __future__ import annotations

import pytest

from load_tests.playback import PlaybackClock, Rung, parse_master, parse_media

MASTER = """#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=2000000,AVERAGE-BANDWIDTH=1800000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
720p/index.m3u8?exp=1&sig=a
#EXT-X-STREAM-INF:BANDWIDTH=500000,RESOLUTION=426x240,CODECS="avc1.640015,mp4a.40.2"
240p/index.m3u8?exp=1&sig=b
"""

MEDIA = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-MAP:URI="init.mp4?exp=1&sig=c"
#EXTINF:4.000,
seg_00000.m4s?exp=1&sig=d
#EXTINF:2.5,
seg_00001.m4s?exp=1&sig=e
#EXT-X-ENDLIST
"""


def test_parse_master_sorts_by_bandwidth_and_keeps_quoted_commas() -> None:
    rungs = parse_master(MASTER)
    assert [r.bandwidth for r in rungs] == [500000, 2000000]
    assert rungs[1].uri.startswith("720p/index.m3u8?") and rungs[1].resolution == "1280x720"


def test_parse_media() -> None:
    init, segments = parse_media(MEDIA)
    assert init == "init.mp4?exp=1&sig=c"
    assert segments == [(4.0, "seg_00000.m4s?exp=1&sig=d"), (2.5, "seg_00001.m4s?exp=1&sig=e")]


def test_fast_downloads_never_stall() -> None:
    clock = PlaybackClock()
    clock.start(0.0)
    t = 0.0
    for _ in range(10):
        t += 0.5
        clock.segment_downloaded(t, 4.0, 1_000_000, 0.5)
        t += 3.5  # the player waits while its buffer is comfortable
    assert clock.startup_time == pytest.approx(0.5)
    assert clock.stall_count == 0 and clock.stall_ratio(t) == 0.0


def test_slow_downloads_stall_and_count_rebuffering() -> None:
    clock = PlaybackClock()
    clock.start(0.0)
    clock.segment_downloaded(1.0, 4.0, 1000, 1.0)  # plays from t=1 until t=5
    clock.segment_downloaded(7.0, 4.0, 1000, 6.0)  # arrives 2 s after the buffer ran dry
    assert clock.stall_count == 1
    assert clock.stall_seconds == pytest.approx(2.0)
    assert clock.position(9.0) == pytest.approx(6.0)
    # 2 s stalled over 2 s stalled + 6 s watched.
    assert clock.stall_ratio(9.0) == pytest.approx(0.25)
    assert clock.segment_ratios == [0.25, 1.5]


def test_rung_choice_follows_throughput() -> None:
    rungs = [Rung(500_000, "a"), Rung(2_000_000, "b")]
    clock = PlaybackClock()
    assert clock.choose(rungs) == 0
    clock.segment_downloaded(1.0, 4.0, 5_000_000, 1.0)  # 40 Mb/s
    assert clock.choose(rungs) == 1 and clock.switches == 1
    clock.throughput_bps = 600_000.0
    assert clock.choose(rungs) == 0 and clock.switches == 2
