"""Give tools that need a file (ffprobe, ffmpeg) a readable location for an object."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shared.storage.base import ObjectStore


@asynccontextmanager
async def media_location(store: ObjectStore, key: str) -> AsyncIterator[str]:
    """A path ffmpeg can read: the file itself on disk, or a temporary download."""
    local = store.local_path(key)
    if local is not None:
        yield str(local)
        return
    with tempfile.TemporaryDirectory(prefix="vsp-src-") as folder:
        path = Path(folder) / "source"
        await store.download_file(key, path)
        yield str(path)
