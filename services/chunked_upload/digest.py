"""The sha-256 of an upload, computed as its bytes are stored instead of read back at the end.

A hashlib object cannot be serialized, so the running hash cannot go into the database with the
offset. It stays in the process that stored the bytes: a bounded map from upload id to the
committed offset and the hash state of every byte before it. A PATCH that starts at that offset
continues the hash and leaves the new state at its own committed offset; the last one leaves the
digest of the whole upload, and finalizing takes it from here.

The trade-off: a PATCH that reaches another replica, or this process after a restart, finds no
state for its offset. The upload then goes on without one, and finalizing reads the assembled
object back once to hash it, as every upload did before. Bytes are never hashed on a guess: the
state is kept only for an offset a commit has made true, and committed bytes never change.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict

# A hash state is a few hundred bytes: this bounds the map to a few MiB per process.
MAX_UPLOADS = 10_000


class RunningDigests:
    """Hash states of uploads under way, by upload id, the least recently used dropped first."""

    def __init__(self, max_uploads: int = MAX_UPLOADS) -> None:
        self.max_uploads = max_uploads
        self._states: OrderedDict[uuid.UUID, tuple[int, hashlib._Hash]] = OrderedDict()

    def resume(self, upload_id: uuid.UUID, offset: int) -> hashlib._Hash | None:
        """A hash of the upload's first ``offset`` bytes to go on with, if this process has it."""
        if offset == 0:
            return hashlib.sha256()
        kept = self._states.get(upload_id)
        if kept is None or kept[0] != offset:
            return None
        self._states.move_to_end(upload_id)
        return kept[1].copy()

    def keep(self, upload_id: uuid.UUID, offset: int, state: hashlib._Hash) -> None:
        """Remember the hash of the upload's first ``offset`` bytes (just committed)."""
        self._states[upload_id] = (offset, state.copy())
        self._states.move_to_end(upload_id)
        while len(self._states) > self.max_uploads:
            self._states.popitem(last=False)

    def hexdigest(self, upload_id: uuid.UUID, length: int) -> str | None:
        """The sha-256 of the whole upload of ``length`` bytes, if every byte went through here."""
        kept = self._states.get(upload_id)
        return kept[1].hexdigest() if kept is not None and kept[0] == length else None

    def forget(self, upload_id: uuid.UUID) -> None:
        self._states.pop(upload_id, None)


# One per process: the state lives where the bytes arrived.
DIGESTS = RunningDigests()
