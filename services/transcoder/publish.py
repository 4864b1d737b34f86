"""Publish a ladder while ffmpeg writes it, so viewers can start before the job ends.

ffmpeg renames each finished segment into place before it rewrites the EVENT playlist that
lists it, so every segment a playlist names is complete. Each pass stores the new init and
media segments first and the playlist that references them after, so a player never sees a
URI whose object is missing. Once every variant has a segment, a master playlist with the
planned rates goes up and ``on_master`` runs (the row then points at it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.transcoder.ladder import Rung
from services.transcoder.package import (
    content_type,
    init_segment,
    master_playlist,
    planned_variant,
    segment_files,
    variant_codecs,
)
from shared.media.ffprobe import MediaInfo
from shared.media.hls import referenced_uris
from shared.storage import ObjectStore

log = logging.getLogger(__name__)

MASTER = "master.m3u8"


class LivePublisher:
    """Mirrors ``out_dir`` into the store under ``prefix`` as segments are finished."""

    def __init__(
        self,
        store: ObjectStore,
        out_dir: Path,
        prefix: str,
        rungs: list[Rung],
        info: MediaInfo,
        on_master: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.out_dir = out_dir
        self.prefix = prefix
        self.rungs = rungs
        self.info = info
        self.on_master = on_master
        self.stored: set[str] = set()
        self.playlists: dict[str, str] = {}
        self.master_published = False

    async def _store_file(self, relative: str) -> None:
        path = self.out_dir / relative
        await self.store.put_file(self.prefix + relative, path, content_type(path.name))
        self.stored.add(relative)

    async def sync(self) -> None:
        """Store what ffmpeg finished since the last pass."""
        for rung in self.rungs:
            playlist = self.out_dir / rung.name / "index.m3u8"
            try:
                text = await asyncio.to_thread(playlist.read_text)
            except FileNotFoundError:
                continue
            if text == self.playlists.get(rung.name):
                continue
            for uri in referenced_uris(text):
                relative = f"{rung.name}/{uri}"
                if relative not in self.stored:
                    await self._store_file(relative)
            await self.store.put_bytes(
                f"{self.prefix}{rung.name}/index.m3u8", text.encode(), content_type("index.m3u8")
            )
            self.playlists[rung.name] = text
        if not self.master_published and all(
            segment_files(self.playlists.get(r.name, "")) for r in self.rungs
        ):
            await self.store.put_bytes(
                self.prefix + MASTER, self.planned_master().encode(), content_type(MASTER)
            )
            self.master_published = True
            await self.on_master()
            log.info("first segments of %s are live", self.prefix)

    def planned_master(self) -> str:
        """A master playlist announcing the planned rates."""
        stats = [
            planned_variant(
                r, variant_codecs(r, init_segment(self.out_dir / r.name), self.info.has_audio)
            )
            for r in self.rungs
        ]
        return master_playlist(stats, self.info)

    async def run(self, interval_seconds: float) -> None:
        """Sync every ``interval_seconds`` until cancelled."""
        while True:
            await self.sync()
            await asyncio.sleep(interval_seconds)
