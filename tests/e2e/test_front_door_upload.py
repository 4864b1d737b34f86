"""A 1 GiB upload through the front door with ``curl --http2``.

nginx terminates TLS and h2 and streams the body to the upload service over HTTP/1.1 as it
arrives: the stored source is the file byte for byte, and nginx never spooled the body to a
temporary file (it warns in its error log whenever it does, and it would here: the body is a
thousand times its in-memory buffer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.accounts import Account
from tests.support.front_door import curl
from tests.support.infra import private_queues
from tests.support.media import MIB, make_clip, padded_media, sha256_file
from tests.support.processes import Processes
from tests.support.proxies import Front, start_front_door
from tests.support.upload import env_store, source_sha256

SIZE = 1024 * MIB
# What nginx logs when a request body outgrows its buffer and goes to client_body_temp_path.
SPOOLED = "a client request body is buffered to a temporary file"


@dataclass(frozen=True)
class Door:
    front: Front
    work: Path  # nginx's prefix: its configuration, error log and temporary folders


@pytest.fixture(scope="module")
def door(test_env: dict[str, str], test_root: Path) -> Iterator[Door]:
    procs = Processes(test_root / "logs" / "front-door-upload", test_env)
    # No worker runs here: the upload's transcode job goes to queues of this module's own.
    with private_queues("front-door-upload") as queues:
        try:
            origin = procs.service("origin")
            upload = procs.service("upload", env={**queues, "UPLOAD_MAX_BYTES": str(2 * SIZE)})
            work = test_root / "front-door-upload"
            front = start_front_door(procs, work, origin=origin.url or "", upload=upload.url or "")
            yield Door(front, work)
        finally:
            procs.stop_all()


@pytest.fixture
def big_file(media_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A 1 GiB MP4, deleted afterwards rather than left among the kept temporary folders."""
    clip = make_clip(media_dir / "front-door-upload.mp4", seconds=2, size="320x180")
    path = padded_media(clip, tmp_path / "big.mp4", SIZE)
    yield path
    path.unlink()


async def test_a_gibibyte_streams_through_the_front_door_whole(
    door: Door, account: Account, test_env: dict[str, str], big_file: Path
) -> None:
    headers = {**account.headers, "Content-Type": "video/mp4"}
    status, version, answer = curl(
        "PUT", f"{door.front.https}/api/videos", big_file, door.front.certificate, headers
    )
    assert (status, version) == (201, "2"), answer
    video = json.loads(answer)
    store = env_store(test_env)
    try:
        assert video["size_bytes"] == SIZE
        assert await source_sha256(store, video["id"]) == sha256_file(big_file)
        log = (door.work / "error.log").read_text()
        assert SPOOLED not in log, log
    finally:
        await store.delete_prefix(f"videos/{video['id']}/")
