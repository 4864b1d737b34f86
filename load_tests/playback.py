"""A viewer's playback clock: what an HLS player experiences, independent of any HTTP client.

The model follows what players do: download segments one after another into a buffer, start
playing once ``startup_segments`` are buffered, play in real time, stall when the buffer runs dry,
and pick the next rung from measured throughput (highest rung whose BANDWIDTH fits within
``safety`` of the throughput estimate, an EWMA of segment download rates).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from tests.support.hls import attributes, variant_streams


@dataclass(frozen=True)
class Rung:
    bandwidth: int
    uri: str
    resolution: str | None = None


def parse_master(text: str) -> list[Rung]:
    """Variant streams of a master playlist, lowest BANDWIDTH first."""
    rungs = [
        Rung(int(attrs["BANDWIDTH"]), uri, attrs.get("RESOLUTION"))
        for attrs, uri in variant_streams(text)
    ]
    return sorted(rungs, key=lambda r: r.bandwidth)


def parse_media(text: str) -> tuple[str | None, list[tuple[float, str]]]:
    """The init segment URI (EXT-X-MAP) and (duration, uri) of every media segment."""
    init = None
    segments: list[tuple[float, str]] = []
    duration: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            init = attributes(line).get("URI")
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((duration, line))
            duration = None
    return init, segments


@dataclass
class PlaybackClock:
    """Tracks buffer, startup, stalls and switches as segments arrive (times in seconds)."""

    startup_segments: int = 1
    safety: float = 0.8
    ewma_weight: float = 0.3
    started_at: float | None = None
    playing_since: float | None = None
    buffer_end: float = 0.0  # media time buffered up to
    played_base: float = 0.0  # media time played when the clock last (re)started
    stall_seconds: float = 0.0
    stall_count: int = 0
    switches: int = 0
    throughput_bps: float | None = None
    current: int | None = None
    segment_ratios: list[float] = field(default_factory=list)
    startup_time: float | None = None
    _stalled_at: float | None = None
    _segments_buffered: int = 0

    def start(self, now: float) -> None:
        self.started_at = now

    def position(self, now: float) -> float:
        """Media time being shown now."""
        if self.playing_since is None:
            return self.played_base
        return min(self.buffer_end, self.played_base + (now - self.playing_since))

    def buffered_ahead(self, now: float) -> float:
        return self.buffer_end - self.position(now)

    def choose(self, rungs: list[Rung]) -> int:
        """Index of the rung to fetch next; counts a switch when it changes."""
        if self.throughput_bps is None:
            choice = 0
        else:
            fitting = [
                i for i, r in enumerate(rungs) if r.bandwidth <= self.throughput_bps * self.safety
            ]
            choice = fitting[-1] if fitting else 0
        if self.current is not None and choice != self.current:
            self.switches += 1
        self.current = choice
        return choice

    def segment_downloaded(self, now: float, duration: float, size: int, seconds: float) -> None:
        """Record a segment that took ``seconds`` to download and ended at ``now``."""
        self._check_stall(now)
        self.segment_ratios.append(seconds / duration if duration else 0.0)
        if seconds > 0:
            rate = size * 8 / seconds
            self.throughput_bps = (
                rate
                if self.throughput_bps is None
                else (self.ewma_weight * rate + (1 - self.ewma_weight) * self.throughput_bps)
            )
        self.buffer_end += duration
        self._segments_buffered += 1
        if self._stalled_at is not None:
            self.stall_seconds += now - self._stalled_at
            self._stalled_at = None
            self.playing_since = now
        elif self.playing_since is None and self._segments_buffered >= self.startup_segments:
            if self.startup_time is None and self.started_at is not None:
                self.startup_time = now - self.started_at
            self.playing_since = now

    def _check_stall(self, now: float) -> None:
        if self.playing_since is None or self._stalled_at is not None:
            return
        ran_dry_at = self.playing_since + (self.buffer_end - self.played_base)
        if now > ran_dry_at:
            self._stalled_at = ran_dry_at
            self.stall_count += 1
            self.played_base = self.buffer_end
            self.playing_since = None

    def watched_seconds(self, now: float) -> float:
        return self.position(now)

    def stalled_seconds(self, now: float) -> float:
        """Time spent stalled so far, a stall still going on included."""
        self._check_stall(now)
        return self.stall_seconds + (now - self._stalled_at if self._stalled_at else 0.0)

    def stall_ratio(self, now: float) -> float:
        """Stall time over (stall time + watched time): the rebuffering ratio."""
        stalled = self.stalled_seconds(now)
        total = stalled + self.watched_seconds(now)
        return stalled / total if total else 0.0

    def record(self, now: float, errors: int) -> dict[str, Any]:
        """What the viewer experienced, as ``summarize`` takes it.

        A session cut short before it started playing (without an error) counts the wait so far
        as its startup time: a lower bound, but leaving it out would hide the slowest startups.
        """
        startup = self.startup_time
        if startup is None and not errors and self.started_at is not None:
            startup = now - self.started_at
        return {
            "startup": startup,
            "stall_seconds": self.stalled_seconds(now),
            "stalls": self.stall_count,
            "watched_seconds": self.watched_seconds(now),
            "segment_ratios": self.segment_ratios,
            "switches": self.switches,
            "errors": errors,
        }


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """What viewers experienced over a run, from the ``PlaybackClock.record`` of each session."""
    startups = [s["startup"] for s in sessions if s["startup"] is not None]
    ratios = [r for s in sessions for r in s["segment_ratios"]]
    stalled = sum(s["stall_seconds"] for s in sessions)
    watched = sum(s["watched_seconds"] for s in sessions)
    return {
        "sessions": len(sessions),
        "startup_p50_seconds": percentile(startups, 0.5),
        "startup_p95_seconds": percentile(startups, 0.95),
        "stall_ratio": stalled / (stalled + watched) if stalled + watched else 0.0,
        "stalls": sum(s["stalls"] for s in sessions),
        "watched_seconds": watched,
        "segment_time_ratio_mean": statistics.fmean(ratios) if ratios else None,
        "segment_time_ratio_p95": percentile(ratios, 0.95),
        "switches_per_session": statistics.fmean([s["switches"] for s in sessions])
        if sessions
        else None,
        "errors": sum(s["errors"] for s in sessions),
    }
