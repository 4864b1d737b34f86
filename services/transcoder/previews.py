"""Scrubbing previews: sprite sheets of small frames and the WebVTT track that maps time to tiles.

The frames come out of the ladder's own decode (one more branch of its split: ``fps`` keeps one
frame per interval, the one at its start, before anything is scaled, each written as a tile
JPEG), so previews cost a small scale and a few JPEGs, not a second decode. After the encode one
short ffmpeg run lays the tiles out in sheets (``tile``) and the tiles are deleted. The sheets
are not tiled inside the encode: ffmpeg writes no ``-progress`` report before every output has
its first frame, and a sheet is whole only after ``columns x rows`` intervals, for most videos
at the end.

The interval grows with the duration so that a video never has more than ``MAX_TILES`` tiles:
at most ``MAX_TILES / 100`` sheets of 10x10 tiles. ``thumbnails.vtt`` has one cue per tile,
``sprites-N.jpg#xywh=x,y,w,h`` as payload, the form players and scrubbing libraries read.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.transcoder.ladder import Rung
from shared.media import tools
from shared.media.thumbnails import THUMBNAILS

__all__ = [
    "THUMBNAILS",
    "SpritePlan",
    "make_sheets",
    "plan_for",
    "plan_sprites",
    "sheet_files",
    "sheets_command",
    "thumbnails_vtt",
]

log = logging.getLogger(__name__)

SPRITE_PATTERN = "sprites-%d.jpg"
TILE_PATTERN = "thumb-%05d.jpg"
TILE_WIDTH = 160
SHEET_COLUMNS = 10
SHEET_ROWS = 10
MAX_TILES = 300
MIN_INTERVAL_SECONDS = 1
# Laying out 300 tiles takes a fraction of a second; this only bounds a run gone wrong.
SHEETS_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class SpritePlan:
    """How a video's preview frames are taken and laid out."""

    duration_seconds: float
    interval_seconds: int
    tile_width: int
    tile_height: int
    columns: int
    rows: int

    @property
    def tiles(self) -> int:
        return max(1, math.ceil(self.duration_seconds / self.interval_seconds))

    @property
    def per_sheet(self) -> int:
        return self.columns * self.rows

    @property
    def sheets(self) -> int:
        return math.ceil(self.tiles / self.per_sheet)

    def sheet_name(self, index: int) -> str:
        return SPRITE_PATTERN % index

    def filter(self, source: str, label: str) -> str:
        """The filter chain from a decoded branch ``source`` to the single tiles ``label``."""
        # round=up keeps the last frame at or before each interval's start and lets it out as
        # soon as the next frame comes (round=near would wait half an interval, and ffmpeg's
        # first progress report with it); start_time=0 numbers the tiles from 0 even when the
        # video starts late.
        return (
            f"{source}fps=1/{self.interval_seconds}:start_time=0:round=up,"
            f"scale={self.tile_width}:{self.tile_height}:flags=bicubic,setsar=1[{label}]"
        )


def plan_sprites(duration_seconds: float, width: int, height: int) -> SpritePlan | None:
    """The sprite layout for a video of that length whose top rung is ``width`` x ``height``."""
    if duration_seconds <= 0 or width <= 0 or height <= 0:
        return None
    interval = max(MIN_INTERVAL_SECONDS, math.ceil(duration_seconds / MAX_TILES))
    tile_height = max(2, 2 * round(TILE_WIDTH * height / width / 2))
    tiles = max(1, math.ceil(duration_seconds / interval))
    columns = min(SHEET_COLUMNS, tiles)
    rows = min(SHEET_ROWS, math.ceil(tiles / columns))
    return SpritePlan(duration_seconds, interval, TILE_WIDTH, tile_height, columns, rows)


def plan_for(duration_seconds: float, rungs: Sequence[Rung]) -> SpritePlan | None:
    """The sprite layout of a ladder, shaped like its top video rung (None: audio only)."""
    top = next((r for r in rungs if r.kind == "video"), None)
    if top is None or not top.width or not top.height:
        return None
    return plan_sprites(duration_seconds, top.width, top.height)


def _timestamp(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def thumbnails_vtt(plan: SpritePlan) -> str:
    """The WebVTT thumbnails track: one cue per tile, covering the whole duration."""
    lines = ["WEBVTT", ""]
    for index in range(plan.tiles):
        start = index * plan.interval_seconds
        end = min(plan.duration_seconds, start + plan.interval_seconds)
        sheet, slot = divmod(index, plan.per_sheet)
        row, column = divmod(slot, plan.columns)
        x, y = column * plan.tile_width, row * plan.tile_height
        lines += [
            f"{_timestamp(start)} --> {_timestamp(end)}",
            f"{plan.sheet_name(sheet)}#xywh={x},{y},{plan.tile_width},{plan.tile_height}",
            "",
        ]
    return "\n".join(lines)


def sheet_files(folder: Path, plan: SpritePlan) -> list[Path]:
    """The sheets ffmpeg wrote for ``plan``, in order; empty unless every one is there."""
    files = [folder / plan.sheet_name(i) for i in range(plan.sheets)]
    return files if all(f.exists() for f in files) else []


def sheets_command(folder: Path, plan: SpritePlan) -> list[str]:
    """ffmpeg arguments that lay the tiles in ``folder`` out in the plan's sheets, in order."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-threads", "1",
        "-f", "image2", "-start_number", "0", "-i", str(folder / TILE_PATTERN),
        "-vf", f"tile={plan.columns}x{plan.rows}", "-frames:v", str(plan.sheets),
        "-q:v", "5", "-threads", "1", "-start_number", "0", "-f", "image2",
        str(folder / SPRITE_PATTERN),
    ]  # fmt: skip


async def make_sheets(folder: Path, plan: SpritePlan) -> list[Path]:
    """Lay the tiles the encode wrote in ``folder`` out in sheets, then delete the tiles; the
    sheets, in order (empty when there are none: the video then has no previews)."""
    try:
        if (folder / (TILE_PATTERN % 0)).exists():
            done = await tools.run_to_end(sheets_command(folder, plan), SHEETS_TIMEOUT_SECONDS)
            if done.returncode != 0:
                log.warning(
                    "laying out preview sheets in %s failed (%s): %s",
                    folder,
                    tools.exit_words(done.returncode),
                    done.stderr or "no output",
                )
    except TimeoutError:
        log.warning(
            "laying out preview sheets in %s took over %.0f s", folder, SHEETS_TIMEOUT_SECONDS
        )
    finally:
        await asyncio.to_thread(_delete_tiles, folder)
    return sheet_files(folder, plan)


def _delete_tiles(folder: Path) -> None:
    for tile in folder.glob(TILE_PATTERN.split("%", 1)[0] + "*.jpg"):
        tile.unlink(missing_ok=True)
