"""Per-account upload quotas on both upload services, run as real processes sharing one Redis.

Over each quota (stored bytes, concurrent uploads, uploads per day) an upload hears a 413 or
429 whose JSON body names the quota, with Retry-After or ``resets_at`` when it frees, and
nothing of it is kept: no object, no row, no queued job, no Redis key. The two services share
an account's slots, and uploads racing for the last ones get exactly as many as the quota
allows. Each test uploads as an account of its own.
"""

from __future__ import annotations

import random
import select
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.runtime.resources import Resources
from shared.videos import quotas
from tests.support.accounts import Account, create_account
from tests.support.media import make_clip
from tests.support.polling import eventually
from tests.support.security import Leftovers, assert_nothing_kept, refused
from tests.support.upload import PATCH, TUS, VIDEO_ID, OwnService, own_service

CONCURRENT = 2
PER_DAY = 5
RAW = {"Content-Type": "video/mp4"}


@dataclass(frozen=True)
class Services:
    upload: OwnService
    tus: OwnService
    stored_bytes: int

    @property
    def videos(self) -> str:
        return f"{self.upload.url}/api/videos"

    @property
    def files(self) -> str:
        return f"{self.tus.url}/files/"


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> bytes:
    return make_clip(media_dir / "quota-clip.mp4", seconds=1, size="160x90").read_bytes()


@pytest.fixture(scope="module")
def services(test_env: dict[str, str], test_root: Path, clip: bytes) -> Iterator[Services]:
    """Both upload services with small quotas, on one Redis database of their own."""
    env = {
        "REDIS_URL": f"{test_env['REDIS_URL'].rsplit('/', 1)[0]}/{random.randint(1, 15)}",
        # Room for two clips and a half.
        "QUOTA_STORED_BYTES": str(len(clip) * 5 // 2),
        "QUOTA_CONCURRENT_UPLOADS": str(CONCURRENT),
        "QUOTA_UPLOADS_PER_DAY": str(PER_DAY),
    }
    logs = test_root / "logs" / "quotas"
    with (
        own_service("upload", test_env, logs / "upload", **env) as upload,
        own_service("chunked_upload", test_env, logs / "tus", **env) as tus,
    ):
        yield Services(upload, tus, len(clip) * 5 // 2)


@pytest.fixture(scope="module")
async def kept(services: Services) -> AsyncIterator[Resources]:
    """The services' store, database, Redis and the upload service's queues."""
    async with services.upload.resources() as res:
        yield res


@pytest.fixture
def uploader(test_env: dict[str, str]) -> Account:
    """An account of the test's own, with all of its quotas left."""
    return create_account(test_env)


def upload(services: Services, account: Account, body: Any, **headers: str) -> httpx.Response:
    """A streamed upload of ``body`` (bytes, or an iterator sent chunked)."""
    return httpx.post(
        services.videos, content=body, headers={**RAW, **account.headers, **headers}, timeout=60
    )


def create(services: Services, account: Account, **headers: str) -> httpx.Response:
    return httpx.post(services.files, headers={**TUS, **account.headers, **headers})


def created(services: Services, account: Account, **headers: str) -> str:
    """The URL of a new tus upload."""
    response = create(services, account, **headers)
    assert response.status_code == 201, response.text
    return str(httpx.URL(services.files).join(response.headers["location"]))


def patch(url: str, account: Account, body: Any, offset: int = 0, **headers: str) -> httpx.Response:
    return httpx.patch(
        url,
        content=body,
        headers={**PATCH, **account.headers, "Upload-Offset": str(offset), **headers},
        timeout=60,
    )


def head(url: str, account: Account) -> int:
    return httpx.head(url, headers={**TUS, **account.headers}).status_code


def terminate(url: str, account: Account) -> int:
    return httpx.delete(url, headers={**TUS, **account.headers}).status_code


def chunked(data: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    """``data`` as a body of no declared length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def over_stored_bytes(response: httpx.Response, services: Services, used: int) -> None:
    body = refused(response, 413, error="payload_too_large", mentions="deleting videos")
    assert body["quota"] == "stored_bytes", body
    assert body["limit"] == services.stored_bytes and body["used"] == used, body


def over_concurrent(response: httpx.Response) -> None:
    body = refused(response, 429, error="too_many_requests", mentions="in progress")
    assert body["quota"] == "concurrent_uploads" and body["limit"] == CONCURRENT, body
    assert int(response.headers["retry-after"]) > 0


def over_per_day(response: httpx.Response) -> None:
    body = refused(response, 429, error="too_many_requests", mentions="per UTC day")
    assert body["quota"] == "uploads_per_day" and body["limit"] == PER_DAY, body
    now = datetime.now(UTC)
    resets_at = datetime.fromisoformat(body["resets_at"])
    assert resets_at == quotas.next_midnight(now), body
    wait = int(response.headers["retry-after"])
    assert abs(wait - (resets_at - now).total_seconds()) < 60, (wait, body)


async def test_stored_bytes_are_bounded_before_and_while_reading(
    services: Services, kept: Resources, uploader: Account, clip: bytes
) -> None:
    first = upload(services, uploader, clip)
    assert first.status_code == 201, first.text
    used = len(clip)
    too_much = clip * 2  # one clip and a half fits
    before = await Leftovers.take(kept)

    # Declared: refused before a byte is read, on both services.
    over_stored_bytes(upload(services, uploader, too_much), services, used)
    over_stored_bytes(
        create(services, uploader, **{"Upload-Length": str(len(too_much))}), services, used
    )
    # Of no declared length: refused on the first byte past the room, and nothing kept.
    over_stored_bytes(upload(services, uploader, chunked(too_much)), services, used)
    await assert_nothing_kept(kept, before)

    # A tus upload of deferred length grows only into the room; past it, it is gone.
    deferred = created(services, uploader, **{"Upload-Defer-Length": "1"})
    over_stored_bytes(patch(deferred, uploader, chunked(too_much)), services, used)
    assert head(deferred, uploader) == 404
    deferred = created(services, uploader, **{"Upload-Defer-Length": "1"})
    over_stored_bytes(patch(deferred, uploader, too_much), services, used)
    assert head(deferred, uploader) == 404
    await assert_nothing_kept(kept, before)

    # What fits is taken, a declared length counting from its creation.
    fits = created(services, uploader, **{"Upload-Length": str(len(clip))})
    held = used + len(clip)
    over_stored_bytes(upload(services, uploader, clip), services, held)
    done = patch(fits, uploader, clip)
    assert done.status_code == 204, done.text
    over_stored_bytes(
        create(services, uploader, **{"Upload-Length": str(len(clip))}), services, held
    )


async def test_concurrent_uploads_are_bounded_across_both_services(
    services: Services, kept: Resources, uploader: Account, clip: bytes
) -> None:
    # One tus upload of a few bytes and one of a clip: the stored-bytes quota has room left.
    urls = [created(services, uploader, **{"Upload-Length": str(n)}) for n in (10, len(clip))]
    assert await quotas.uploads_in_progress(kept, uploader.user_id) == CONCURRENT
    before = await Leftovers.take(kept)
    over_concurrent(create(services, uploader, **{"Upload-Length": str(len(clip))}))
    over_concurrent(upload(services, uploader, clip))
    await assert_nothing_kept(kept, before)

    # Terminating one frees its slot, finishing one too.
    assert terminate(urls[0], uploader) == 204
    assert upload(services, uploader, clip).status_code == 201
    finished = patch(urls[1], uploader, clip)
    assert finished.status_code == 204 and finished.headers[VIDEO_ID], finished.text
    assert await quotas.uploads_in_progress(kept, uploader.user_id) == 0


async def test_streamed_uploads_hold_a_slot_until_they_end(
    services: Services, kept: Resources, uploader: Account, clip: bytes
) -> None:
    go = threading.Event()

    def held() -> Iterator[bytes]:
        yield clip[:1024]
        go.wait(60)
        yield clip[1024:]

    with ThreadPoolExecutor(CONCURRENT) as pool:
        running = [pool.submit(upload, services, uploader, held()) for _ in range(CONCURRENT)]

        async def all_in_progress() -> bool:
            return await quotas.uploads_in_progress(kept, uploader.user_id) == CONCURRENT

        await eventually(all_in_progress, within=30, what="both uploads to hold their slots")
        before = await Leftovers.take(kept)
        over_concurrent(upload(services, uploader, clip))
        over_concurrent(create(services, uploader, **{"Upload-Length": "10"}))
        await assert_nothing_kept(kept, before)
        go.set()
        assert [future.result().status_code for future in running] == [201] * CONCURRENT
    assert await quotas.uploads_in_progress(kept, uploader.user_id) == 0
    # A refused upload also ends its slot (here: not media).
    assert upload(services, uploader, b"not a video").status_code == 400
    assert await quotas.uploads_in_progress(kept, uploader.user_id) == 0


async def test_racing_creations_get_exactly_the_free_slots(
    services: Services, uploader: Account
) -> None:
    racers = 8
    start = threading.Barrier(racers)

    def race(_: int) -> httpx.Response:
        start.wait(30)
        return create(services, uploader, **{"Upload-Length": "10"})

    with ThreadPoolExecutor(racers) as pool:
        answers = list(pool.map(race, range(racers)))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [201] * CONCURRENT + [429] * (racers - CONCURRENT), statuses
    for response in answers:
        if response.status_code == 429:
            over_concurrent(response)
        else:
            url = str(httpx.URL(services.files).join(response.headers["location"]))
            assert terminate(url, uploader) == 204


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def held_upload(services: Services, account: Account, clip: bytes, go: threading.Event) -> int:
    """A chunked streamed upload that sends its first KiB, the rest once ``go`` is set; its
    status. A refused upload is answered while the rest is held.
    """
    url = urlsplit(services.videos)
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: video/mp4\r\n"
        f"Authorization: Bearer {account.api_key}\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=60) as sock:
        sock.sendall(head + _chunk(clip[:1024]))
        while not go.is_set():
            if select.select([sock], [], [], 0.1)[0]:
                break  # answered before the end of its body
        else:
            sock.sendall(_chunk(clip[1024:]) + b"0\r\n\r\n")
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


async def test_racing_streamed_uploads_get_exactly_the_free_slots(
    services: Services, kept: Resources, uploader: Account, clip: bytes
) -> None:
    racers = 6
    go = threading.Event()
    with ThreadPoolExecutor(racers) as pool:
        running = [pool.submit(held_upload, services, uploader, clip, go) for _ in range(racers)]

        async def refused_answered() -> bool:
            return sum(future.done() for future in running) >= racers - CONCURRENT

        # A refused body is drained for at most 5 s before the answer.
        await eventually(refused_answered, within=30, what="the refused uploads to be answered")
        assert await quotas.uploads_in_progress(kept, uploader.user_id) == CONCURRENT
        go.set()
        statuses = sorted(future.result() for future in running)
    assert statuses == [201] * CONCURRENT + [429] * (racers - CONCURRENT), statuses
    assert await quotas.uploads_in_progress(kept, uploader.user_id) == 0


async def test_uploads_per_day_are_counted_once_accepted(
    services: Services, kept: Resources, uploader: Account, clip: bytes, test_env: dict[str, str]
) -> None:
    # Two partial uploads count; the final upload joining them does not.
    half = len(clip) // 2
    parts = []
    for piece in (clip[:half], clip[half:]):
        url = created(
            services, uploader, **{"Upload-Length": str(len(piece)), "Upload-Concat": "partial"}
        )
        assert patch(url, uploader, piece).status_code == 204
        parts.append(httpx.URL(url).path)
    final = create(services, uploader, **{"Upload-Concat": "final;" + " ".join(parts)})
    assert final.status_code == 201, final.text
    # Refused uploads do not count.
    over_stored_bytes(upload(services, uploader, clip * 3), services, len(clip))
    for _ in range(PER_DAY - 2):
        url = created(services, uploader, **{"Upload-Length": "10"})
        assert terminate(url, uploader) == 204

    before = await Leftovers.take(kept)
    over_per_day(create(services, uploader, **{"Upload-Length": "10"}))
    over_per_day(upload(services, uploader, clip))
    await assert_nothing_kept(kept, before)
    # Another account has its own day.
    assert upload(services, create_account(test_env), clip).status_code == 201
