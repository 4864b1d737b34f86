"""Captions against a real origin: SRT and WebVTT published as HLS subtitle renditions of a real
fMP4 ladder, signed in both URL styles, replaced and deleted without transcoding, kept by a new
run, purged from an edge on change, refused with a JSON error when hostile, gone with the video.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select, update

from shared.db.models import Caption, Privacy, Rendition
from shared.db.repositories import VideoRepository
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.edge import start_edge
from tests.support.hls import SubtitleTrack, check_subtitles
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.polling import eventually, logged
from tests.support.processes import Proc, Processes
from tests.support.security import Leftovers, assert_nothing_kept, refused
from tests.support.signing import signed

SECONDS = 12
MAX_BYTES = 4096
FR_SRT = (
    "1\r\n00:00:01,000 --> 00:00:04,000\r\nBonjour tout le monde\r\n\r\n"
    "2\r\n00:00:05,000 --> 00:00:08,500\r\n<i>Ça va ?</i>\r\n"
)
EN_VTT = (
    "WEBVTT\n\nNOTE hand made\n\n1\n00:00:01.000 --> 00:00:04.000\nHello everyone\n\n"
    "00:00:09.000 --> 00:00:11.000 align:start\nSee you\n"
)
SRT_TYPE = "application/x-subrip"
VTT_TYPE = "text/vtt"


@pytest.fixture(scope="module")
def origin(module_procs: Processes) -> Proc:
    env = {"ORIGIN_CAPTION_MAX_BYTES": str(MAX_BYTES), "ORIGIN_CAPTIONS_MAX_PER_VIDEO": "2"}
    return module_procs.service("origin", env=env)


@pytest.fixture(scope="module")
def ladder(media_dir: Path) -> Path:
    return make_ladder(media_dir, seconds=SECONDS)


@pytest.fixture
async def video(res: Resources, ladder: Path, account: Account) -> AsyncIterator[SeededVideo]:
    yield await seed_video(
        res, ladder, title="captioned", seconds=SECONDS, owner_id=account.user_id
    )


def put(
    origin: Proc,
    video: SeededVideo,
    language: str,
    body: str | bytes | Iterator[bytes],
    content_type: str | None,
    headers: dict[str, str],
    **params: str,
) -> httpx.Response:
    sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
    return httpx.put(
        f"{origin.url}/api/videos/{video.id}/captions/{language}",
        content=body.encode() if isinstance(body, str) else body,
        headers=sent,
        params=params,
        timeout=30,
    )


def call(
    method: str, origin: Proc, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.request(method, f"{origin.url}{path}", headers=headers, timeout=30)


def stream(origin: Proc, video: SeededVideo, mode: str) -> dict[str, Any]:
    response = httpx.get(f"{origin.url}/api/stream/{video.id}", params={"mode": mode})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def fetcher(client: httpx.Client, fetched: list[str]) -> Callable[[str], str]:
    def fetch(url: str) -> str:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
        fetched.append(url)
        return response.text

    return fetch


def subtitles(origin: Proc, video: SeededVideo, mode: str) -> dict[str, SubtitleTrack]:
    """The video's subtitle renditions, each playlist and segment fetched through ``mode`` URLs,
    checked by the strict validator; by LANGUAGE."""
    master_url = stream(origin, video, mode)["master_url"]
    fetched: list[str] = []
    with httpx.Client(timeout=30) as client:
        master = client.get(master_url)
        assert master.status_code == 200, master.text
        tracks = check_subtitles(
            master_url, master.text, fetcher(client, fetched), media_seconds=SECONDS
        )
    for url in fetched:
        # Every URI the player follows carries a credential of its own style.
        assert ("/origin/t/" in url) if mode == "token" else ("sig=v2." in url), url
    return {t.attrs["LANGUAGE"]: t for t in tracks}


def cue_texts(track: SubtitleTrack) -> set[str]:
    return {
        line
        for segment in track.segments
        for block in segment.split("\n\n")[1:]
        for line in block.splitlines()[1:]
    }


def test_srt_and_webvtt_are_served_as_subtitle_renditions(
    origin: Proc, video: SeededVideo, account: Account
) -> None:
    fr = put(origin, video, "fr", FR_SRT, SRT_TYPE, account.headers, label="Français")
    assert fr.status_code == 200, fr.text
    assert fr.json() | {"updated_at": None} == {
        "language": "fr",
        "label": "Français",
        "format": "srt",
        "cues": 2,
        "size_bytes": len(FR_SRT.encode()),
        "updated_at": None,
    }
    # No Content-Type: the WEBVTT line says what it is; the tag is put in its usual case.
    en = put(origin, video, "EN", EN_VTT, None, account.headers)
    assert en.status_code == 200, en.text
    assert en.json()["language"] == "en" and en.json()["format"] == "vtt"

    listed = httpx.get(f"{origin.url}/api/videos/{video.id}/captions").json()["items"]
    assert [(c["language"], c["label"]) for c in listed] == [("en", None), ("fr", "Français")]
    details = httpx.get(f"{origin.url}/api/videos/{video.id}").json()
    assert [c["language"] for c in details["captions"]] == ["en", "fr"]

    for mode in ("query", "token"):
        tracks = subtitles(origin, video, mode)
        assert tracks.keys() == {"fr", "en"}
        assert tracks["fr"].attrs["NAME"] == "Français" and tracks["en"].attrs["NAME"] == "en"
        assert len(tracks["fr"].segments) == SECONDS // 2
        assert {"Bonjour tout le monde", "<i>Ça va ?</i>"} <= cue_texts(tracks["fr"])
        assert {"Hello everyone", "See you"} <= cue_texts(tracks["en"])
        # 1-4 s spans the 2 s segments 0 and 1; nothing is in the last one.
        assert ["Bonjour" in s for s in tracks["fr"].segments] == [1, 1, 0, 0, 0, 0]
        assert "align:start" in tracks["en"].segments[4]


def test_captions_are_replaced_and_deleted_without_transcoding(
    origin: Proc, video: SeededVideo, account: Account
) -> None:
    assert put(origin, video, "fr", FR_SRT, SRT_TYPE, account.headers).status_code == 200
    assert put(origin, video, "en", EN_VTT, VTT_TYPE, account.headers).status_code == 200
    before = subtitles(origin, video, "query")
    third = put(origin, video, "de", EN_VTT, VTT_TYPE, account.headers)
    refused(third, 409, error="conflict", mentions="2 languages")
    old_playlist = urlsplit(before["fr"].url).path.split("/origin/", 1)[1]
    old_segment = signed(origin.url, old_playlist.replace("index.m3u8", "seg_00000.vtt"))
    assert httpx.get(old_segment).status_code == 200

    changed = FR_SRT.replace("Bonjour tout le monde", "Salut")
    replaced = put(origin, video, "fr", changed, SRT_TYPE, account.headers, label="FR")
    assert replaced.status_code == 200, replaced.text
    after = subtitles(origin, video, "query")
    assert after["fr"].attrs["NAME"] == "FR"
    assert after["fr"].attrs["URI"] != before["fr"].attrs["URI"]  # a new version, a new name
    assert "Salut" in cue_texts(after["fr"]) and "Bonjour tout le monde" not in cue_texts(
        after["fr"]
    )
    # The replaced version's objects are gone.
    assert httpx.get(old_segment).status_code == 404

    deleted = httpx.delete(
        f"{origin.url}/api/videos/{video.id}/captions/en", headers=account.headers
    )
    assert deleted.status_code == 204, deleted.text
    assert subtitles(origin, video, "token").keys() == {"fr"}
    again = httpx.delete(f"{origin.url}/api/videos/{video.id}/captions/en", headers=account.headers)
    refused(again, 404, error="not_found", mentions="no captions in en")

    httpx.delete(f"{origin.url}/api/videos/{video.id}/captions/fr", headers=account.headers)
    master = httpx.get(stream(origin, video, "query")["master_url"]).text
    assert "SUBTITLES" not in master


async def test_captions_survive_a_new_run_of_the_ladder(
    origin: Proc, video: SeededVideo, account: Account, res: Resources, ladder: Path
) -> None:
    assert put(origin, video, "fr", FR_SRT, SRT_TYPE, account.headers).status_code == 200
    # A new transcode stores its run under a prefix of its own and points the row at it.
    run = f"{video.prefix}hls/run-2/"
    store = res.need_store()
    for path in sorted(p for p in ladder.rglob("*") if p.is_file()):
        await store.put_file(run + path.relative_to(ladder).as_posix(), path)
    await store.delete_prefix(video.prefix + "hls/360p/")
    async with res.need_db().session() as session:
        await VideoRepository(session).set_fields(video.id, master_key=run + "master.m3u8")
        await session.execute(
            update(Rendition)
            .where(Rendition.video_id == video.id)
            .values(playlist_key=func.replace(Rendition.playlist_key, "/hls/", "/hls/run-2/"))
        )
    for mode in ("query", "token"):
        tracks = subtitles(origin, video, mode)
        assert "/hls/run-2/captions/fr/" in tracks["fr"].url
        assert "Bonjour tout le monde" in cue_texts(tracks["fr"])


async def test_an_edge_serves_the_new_captions_after_a_change(
    procs: Processes, origin: Proc, video: SeededVideo, account: Account, test_root: Path
) -> None:
    edge = start_edge(procs, origin.url, test_root / f"captions-edge-{uuid.uuid4().hex[:6]}")
    await logged(edge, "video events: listening")
    token_master = stream(origin, video, "token")["master_url"]
    through_edge = edge.url + token_master[token_master.index("/origin/") :]

    def languages() -> set[str]:
        response = httpx.get(through_edge)
        assert response.status_code == 200, response.text
        return {
            line.split('LANGUAGE="', 1)[1].split('"', 1)[0]
            for line in response.text.splitlines()
            if "TYPE=SUBTITLES" in line
        }

    assert languages() == set()
    assert languages() == set()  # cached by the edge (public, for a minute)
    assert put(origin, video, "fr", FR_SRT, SRT_TYPE, account.headers).status_code == 200

    async def purged() -> bool:
        return languages() == {"fr"}

    await eventually(purged, within=15, what="the edge to drop its copy of the master")


def raw_put(origin: Proc, path: str, headers: dict[str, str], declared: int) -> bytes:
    """A PUT that declares ``declared`` bytes and sends none: the answer must not wait for them."""
    host, port = origin.url.removeprefix("http://").split(":")
    lines = [f"PUT {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {declared}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


async def test_hostile_captions_are_refused_and_nothing_is_kept(
    origin: Proc,
    video: SeededVideo,
    account: Account,
    stranger: Account,
    res: Resources,
    ladder: Path,
) -> None:
    hidden = await seed_video(
        res, ladder, title="hidden", seconds=SECONDS, owner_id=account.user_id,
        privacy=Privacy.private,
    )  # fmt: skip
    before = await Leftovers.take(res)
    path = f"/api/videos/{video.id}/captions/fr"
    answer = raw_put(origin, path, {**account.headers, "Content-Type": SRT_TYPE}, 10_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    def attempt(
        body: str | bytes | Iterator[bytes], content_type: str | None = SRT_TYPE, **kw: Any
    ) -> httpx.Response:
        return put(
            origin, video, kw.pop("language", "fr"), body, content_type, account.headers, **kw
        )

    refused(attempt("x" * (MAX_BYTES + 1)), 413, error="payload_too_large")

    # Without a declared length: cut once it passes the bound.
    chunks = (b"y" * 1000 for _ in range(MAX_BYTES // 1000 + 2))
    refused(attempt(chunks), 413, error="payload_too_large")
    invalid: dict[str, str | bytes] = {
        "ends before it starts": "1\n00:00:03,000 --> 00:00:02,000\nx\n",
        "past the video": "1\n00:00:10,000 --> 00:01:00,000\nx\n",
        "not UTF-8": b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n",
        "control character": "1\n00:00:01,000 --> 00:00:02,000\nNUL \x00\n",
        "expected": "1\n00:00:01.0 --> 00:00:02,000\nx\n",
        "no cue": "",
        "longer than": "1\n00:00:01,000 --> 00:00:02,000\n" + "z" * 1500 + "\n",
    }
    for mentions, body in invalid.items():
        refused(attempt(body), 422, error="invalid_caption", mentions=mentions)
    refused(attempt(EN_VTT, language="fr-FR-x"), 422, error="invalid_caption", mentions="BCP 47")
    # Not even shaped like a tag: refused by the route's own check.
    assert attempt(EN_VTT, language="f").json()["error"] == "validation_error"
    refused(attempt(FR_SRT, label='a "quoted" name'), 422, error="invalid_caption")
    refused(attempt(b"\x89PNG\r\n\x1a\n\xff", "image/png"), 415, error="unsupported_media_type")

    # Who: anonymous 401, another account 403 (public video) or 404 (private video).
    anonymous = put(origin, video, "fr", FR_SRT, SRT_TYPE, {})
    refused(anonymous, 401, error="unauthorized")
    refused(put(origin, video, "fr", FR_SRT, SRT_TYPE, stranger.headers), 403, error="forbidden")
    refused(put(origin, hidden, "fr", FR_SRT, SRT_TYPE, stranger.headers), 404)
    refused(call("GET", origin, f"/api/videos/{hidden.id}/captions", stranger.headers), 404)
    refused(call("DELETE", origin, path), 401, error="unauthorized")
    refused(call("DELETE", origin, path, stranger.headers), 403, error="forbidden")
    async with res.need_db().session() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Caption)
            .where(Caption.video_id.in_([video.id, hidden.id]))
        )
    assert count == 0
    await assert_nothing_kept(res, before)


async def test_deleting_the_video_deletes_its_captions(
    origin: Proc, res: Resources, ladder: Path, account: Account
) -> None:
    before = await Leftovers.take(res)
    video = await seed_video(res, ladder, title="doomed", seconds=SECONDS, owner_id=account.user_id)
    assert put(origin, video, "fr", FR_SRT, SRT_TYPE, account.headers).status_code == 200
    assert put(origin, video, "en", EN_VTT, VTT_TYPE, account.headers).status_code == 200
    assert await res.need_store().list(f"{video.prefix}captions/")
    deleted = call("DELETE", origin, f"/api/videos/{video.id}", account.headers)
    assert deleted.status_code == 204, deleted.text
    async with res.need_db().session() as session:
        rows = await session.scalar(
            select(func.count()).select_from(Caption).where(Caption.video_id == video.id)
        )
    assert rows == 0
    assert not await res.need_store().list(video.prefix)
    await assert_nothing_kept(res, before)
