"""The object-store interface every backend implements.

Keys are slash-separated relative paths (``videos/{id}/source``). Big objects move as streams of
chunks; no method reads a whole object into memory except ``get_bytes``, meant for playlists.
"""

from __future__ import annotations

import abc
import mimetypes
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.core.errors import BadRequest
from shared.core.keys import check_key

CHUNK_BYTES = 1024 * 1024
MAX_PART_NUMBER = 10_000
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str = "application/octet-stream"


def check_part_number(part_number: int) -> int:
    """Reject part numbers outside S3's ``1..10000``."""
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise BadRequest(f"part number must be between 1 and {MAX_PART_NUMBER}: {part_number}")
    return part_number


def check_parts(parts: Sequence[tuple[int, str]]) -> None:
    """Reject a part list S3 would refuse: empty, out of order or repeated."""
    if not parts:
        raise BadRequest("a multipart upload needs at least one part")
    numbers = [check_part_number(number) for number, _etag in parts]
    if numbers != sorted(set(numbers)):
        raise BadRequest("parts must be listed once each, in ascending order")


def guess_content_type(key: str) -> str:
    """The media type a key's extension implies, with HLS types the stdlib lacks."""
    if key.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    if key.endswith(".m4s"):
        return "video/iso.segment"
    return mimetypes.guess_type(key)[0] or DEFAULT_CONTENT_TYPE


class ObjectStore(abc.ABC):
    """Async object storage."""

    def local_path(self, key: str) -> Path | None:
        """The file holding ``key`` when the backend keeps objects as local files, else None.

        Tools that want a path (ffprobe, ffmpeg, a server sending a file by path) use it directly
        instead of downloading; an object behind an API has none.
        """
        check_key(key)
        return None

    @abc.abstractmethod
    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store the chunks as one object; the object appears only once complete."""

    @abc.abstractmethod
    async def put_file(
        self, key: str, path: Path, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store a local file as an object."""

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store a small object held in memory."""

        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.put_stream(key, one(), content_type)

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size, ETag and modification time; raises NotFound."""

    @abc.abstractmethod
    def get_stream(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` inclusive (the whole object by default) as chunks."""

    async def get_bytes(self, key: str) -> bytes:
        """A whole (small) object."""
        return b"".join([chunk async for chunk in self.get_stream(key)])

    @abc.abstractmethod
    async def download_file(self, key: str, path: Path) -> None:
        """Copy an object to a local file."""

    async def read_url(self, key: str, *, expires_seconds: int = 600) -> str | None:
        """A URL that reads the object (with Range) for ``expires_seconds``, or None.

        For tools that read only part of an object (ffprobe), so nothing is copied. Stores a
        process reads in place (the filesystem) have none.
        """
        return None

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether the object exists."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""
        objects = await self.list(prefix)
        for info in objects:
            await self.delete(info.key)
        return len(objects)

    # Multipart uploads (resumable uploads build an object from parts sent over time).
    # Every part except the last must hold at least ``min_part_bytes``; callers buffer to that.
    min_part_bytes: int = 1

    @abc.abstractmethod
    async def create_multipart(self, key: str) -> str:
        """Start a multipart upload to ``key``; returns its upload id."""

    @abc.abstractmethod
    async def upload_part(
        self, key: str, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        """Store part ``part_number`` (from 1; re-sending replaces it); returns its ETag."""

    @abc.abstractmethod
    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectInfo:
        """Join the ``(part_number, etag)`` parts, ascending, into the object at ``key``."""

    @abc.abstractmethod
    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an upload and its stored parts; aborting an unknown upload is not an error."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise if the store cannot be used (readiness)."""

    async def close(self) -> None:  # noqa: B027 (a no-op default, not an abstract method)
        """Release clients; a no-op by default."""
