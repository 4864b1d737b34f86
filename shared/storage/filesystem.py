"""Filesystem backend: one file per object under a root folder.

Writes go to a temporary file in the same folder and are renamed into place, so a reader never
sees half an object and a crash leaves only a ``.part`` file that ``sweep_partials`` removes.
Multipart uploads keep their parts under ``.multipart/{upload_id}/`` in the root; no valid key
starts with a dot, so ``list`` never sees them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG

from shared.core.errors import BadRequest, NotFound
from shared.core.keys import check_key
from shared.storage.base import (
    CHUNK_BYTES,
    ObjectInfo,
    ObjectStore,
    check_part_number,
    check_parts,
    guess_content_type,
)

_PART_SUFFIX = ".part"
_MULTIPART_DIR = ".multipart"
_UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_KEY_FILE = "key"
# Bytes handed to one write: HTTP/2 bodies arrive in 16 KiB frames, HTTP/1.1 in up to 400 KiB.
WRITE_BATCH_BYTES = 1024 * 1024
_MAX_IOVECS = 512
_advise = getattr(os, "posix_fadvise", None)


def _etag(stat: os.stat_result) -> str:
    return hashlib.md5(f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_batch(fd: int, batch: list[bytes], offset: int, size: int) -> None:
    """Write ``batch`` at the end of ``fd`` and start its writeback."""
    written = os.writev(fd, batch)
    if written < size:
        _write_all(fd, b"".join(batch)[written:])
    if _advise is not None:
        # DONTNEED on pages still dirty starts their writeback now instead of at the final
        # fsync (Linux); pages under writeback are not dropped from the cache.
        _advise(fd, offset, size, os.POSIX_FADV_DONTNEED)


async def _write_stream(fd: int, chunks: AsyncIterable[bytes]) -> None:
    """Write ``chunks`` to ``fd`` in batches of about ``WRITE_BATCH_BYTES``.

    Chunks are gathered in a list and written with one ``writev``, never copied into a bigger
    buffer. A batch is written in a thread while the next one is received; at most one batch is
    in flight, which bounds memory to about two batches.
    """
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    batched = offset = 0
    try:
        async for chunk in chunks:
            batch.append(chunk)
            batched += len(chunk)
            if batched < WRITE_BATCH_BYTES and len(batch) < _MAX_IOVECS:
                continue
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, _write_batch, fd, batch, offset, batched)
            offset += batched
            batch, batched = [], 0
        if pending is not None:
            await pending
            pending = None
        if batch:
            await loop.run_in_executor(None, _write_batch, fd, batch, offset, batched)
    finally:
        if pending is not None:
            # The fd is closed by the caller: let the write in flight end first.
            await asyncio.wait([pending])


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _concatenate(sources: list[Path], dest: Path) -> None:
    with dest.open("wb") as out:
        for source in sources:
            with source.open("rb") as part:
                shutil.copyfileobj(part, out, CHUNK_BYTES)
        out.flush()
        os.fsync(out.fileno())


class FilesystemStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The file that holds ``key``."""
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        """The file that holds ``key``: every object of this store is one."""
        return self.path_for(key)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        if not S_ISREG(st.st_mode):
            # A folder of other objects (``videos/<id>``) is no object: S3 knows no such key.
            raise IsADirectoryError(key)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=_etag(st),
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            content_type=guess_content_type(key),
        )

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_PART_SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            await _write_stream(fd, chunks)
            # Stored means on disk, as with S3: the caller may commit a row that points here.
            closing, fd = fd, -1
            await asyncio.to_thread(_sync_and_close, closing)
            os.replace(tmp, path)
            _sync_dir(path.parent)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return self._info(key, path)

    async def put_file(
        self, key: str, path: Path, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        dest = self.path_for(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}{_PART_SUFFIX}")
        try:
            await asyncio.to_thread(shutil.copyfile, path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self._info(key, dest)

    async def stat(self, key: str) -> ObjectInfo:
        path = self.path_for(key)
        try:
            return self._info(key, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"object {key} does not exist") from None

    async def get_stream(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"object {key} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            last = size - 1 if end is None else min(end, size - 1)
            position = start
            while position <= last:
                # Small reads of page-cached data are faster inline than through a thread.
                want = min(chunk_size, last - position + 1)
                chunk = os.pread(fd, want, position)
                if not chunk:
                    break
                position += len(chunk)
                yield chunk
                await asyncio.sleep(0)
        finally:
            os.close(fd)

    async def download_file(self, key: str, path: Path) -> None:
        source = self.path_for(key)
        if not source.is_file():
            raise NotFound(f"object {key} does not exist")
        await asyncio.to_thread(shutil.copyfile, source, path)

    async def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        path.unlink(missing_ok=True)
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    async def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        # "v/a" must also match the sibling "v/ab", so only a trailing slash names a folder.
        start = base if not prefix or prefix.endswith("/") else base.parent
        if not start.is_dir():
            return []
        found: list[ObjectInfo] = []
        for dirpath, dirs, files in os.walk(start):
            if Path(dirpath) == self.root and _MULTIPART_DIR in dirs:
                dirs.remove(_MULTIPART_DIR)
            for name in files:
                if name.endswith(_PART_SUFFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not key.startswith(f"{_MULTIPART_DIR}/"):
                    found.append(self._info(key, full))
        return sorted(found, key=lambda info: info.key)

    async def delete_prefix(self, prefix: str) -> int:
        count = len(await self.list(prefix))
        base = self.root / prefix.rstrip("/")
        if prefix.endswith("/") and base.is_dir():
            await asyncio.to_thread(shutil.rmtree, base, True)
            self._prune_empty_dirs(base.parent)
            return count
        return await super().delete_prefix(prefix)

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        """The folder of an upload started for ``key``; NotFound if there is none."""
        check_key(key)
        folder = self.root / _MULTIPART_DIR / upload_id
        try:
            if _UPLOAD_ID_RE.match(upload_id) and (folder / _KEY_FILE).read_text() == key:
                return folder
        except (FileNotFoundError, NotADirectoryError):
            pass
        raise NotFound(f"multipart upload {upload_id} for {key} does not exist")

    async def create_multipart(self, key: str) -> str:
        check_key(key)
        upload_id = uuid.uuid4().hex
        folder = self.root / _MULTIPART_DIR / upload_id
        folder.mkdir(parents=True)
        (folder / _KEY_FILE).write_text(key)
        return upload_id

    async def upload_part(
        self, key: str, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        check_part_number(part_number)
        folder = self._upload_dir(key, upload_id)
        stem = f"{part_number:05d}"
        tmp = folder / f".{stem}.{uuid.uuid4().hex}{_PART_SUFFIX}"
        digest = hashlib.md5()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            async for chunk in chunks:
                digest.update(chunk)
                _write_all(fd, chunk)
            # A stored part is on disk: a resumable upload reports its offset only after this.
            closing, fd = fd, -1
            await asyncio.to_thread(_sync_and_close, closing)
            etag = digest.hexdigest()
            final = folder / f"{stem}.{etag}"
            try:
                os.replace(tmp, final)
                await asyncio.to_thread(_sync_dir, folder)
            except FileNotFoundError:
                raise NotFound(f"multipart upload {upload_id} for {key} was aborted") from None
        finally:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
        # Re-sending a part number replaces the earlier part, as in S3.
        for older in folder.glob(f"{stem}.*"):
            if older != final:
                older.unlink(missing_ok=True)
        return etag

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> ObjectInfo:
        check_parts(parts)
        folder = self._upload_dir(key, upload_id)
        sources: list[Path] = []
        for index, (number, etag) in enumerate(parts):
            source = folder / f"{number:05d}.{etag}"
            try:
                size = source.stat().st_size
            except FileNotFoundError:
                raise BadRequest(f"part {number} with ETag {etag} was not uploaded") from None
            if index < len(parts) - 1 and size < self.min_part_bytes:
                raise BadRequest(f"part {number} is smaller than {self.min_part_bytes} bytes")
            sources.append(source)
        dest = self.path_for(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}{_PART_SUFFIX}")
        try:
            await asyncio.to_thread(_concatenate, sources, tmp)
            os.replace(tmp, dest)
            _sync_dir(dest.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(shutil.rmtree, folder, True)
        return self._info(key, dest)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            folder = self._upload_dir(key, upload_id)
        except NotFound:
            return
        await asyncio.to_thread(shutil.rmtree, folder, True)

    async def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"storage root {self.root} is not writable")

    def sweep_partials(self, older_than_seconds: float = 3600) -> int:
        """Remove temporary files left by writers that crashed."""
        cutoff = datetime.now(UTC).timestamp() - older_than_seconds
        removed = 0
        for part in self.root.rglob(f"*{_PART_SUFFIX}"):
            if part.stat().st_mtime < cutoff:
                part.unlink(missing_ok=True)
                removed += 1
        return removed
