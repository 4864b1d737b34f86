"""Who may upload, change, delete and watch: accounts against the real upload services and origin.

Anonymous uploads and tus requests are 401s with a JSON body; another account's upload or video
is a 403; a private video yields no stream URL (404) to anyone but its owner and admins; an
unlisted one plays by link but is not listed; the gateway's ``artist_id`` must name the owner.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.db.models import Privacy
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.infra import private_queues
from tests.support.media import make_clip, make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.processes import Processes
from tests.support.security import refused
from tests.support.upload import PATCH, TUS, VIDEO_ID

ADMIN_TOKEN = "ownership-admin-token-for-tests-0123"


@dataclass(frozen=True)
class Suite:
    upload: str
    tus: str
    origin: str


@pytest.fixture(scope="module")
def suite(test_env: dict[str, str], test_root: Path) -> Iterator[Suite]:
    """The two upload services and the origin; no worker, so jobs go to queues of their own."""
    manager = Processes(test_root / "logs" / "ownership", test_env)
    with private_queues("ownership") as queues:
        try:
            started = [
                manager.service(name, env={**queues, "ORIGIN_ADMIN_TOKEN": ADMIN_TOKEN})
                for name in ("upload", "chunked_upload", "origin")
            ]
            yield Suite(*(proc.url or "" for proc in started))
        finally:
            manager.stop_all()


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> bytes:
    return make_clip(media_dir / "ownership-clip.mp4", seconds=1, size="160x90").read_bytes()


def unauthorized(response: httpx.Response) -> None:
    refused(response, 401, error="unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def forbidden(response: httpx.Response) -> None:
    refused(response, 403, error="forbidden")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create_tus(suite: Suite, account: Account, length: int, **headers: str) -> str:
    response = httpx.post(
        f"{suite.tus}/files/",
        headers={**TUS, **account.headers, "Upload-Length": str(length), **headers},
    )
    assert response.status_code == 201, response.text
    return str(httpx.URL(f"{suite.tus}/files/").join(response.headers["location"]))


def test_anonymous_uploads_and_tus_requests_are_401(
    suite: Suite, account: Account, clip: bytes
) -> None:
    raw = {"Content-Type": "video/mp4"}
    unauthorized(httpx.post(f"{suite.upload}/api/videos", content=clip, headers=raw))
    unauthorized(httpx.put(f"{suite.upload}/api/videos/{uuid.uuid4()}", content=clip, headers=raw))
    form = httpx.post(f"{suite.upload}/api/videos", files={"file": ("a.mp4", clip, "video/mp4")})
    unauthorized(form)
    unauthorized(httpx.post(f"{suite.tus}/files/", headers={**TUS, "Upload-Length": "10"}))
    # A credential that is not valid is refused too, never taken as anonymous.
    forged = {**TUS, "Upload-Length": "10", "Authorization": "Bearer vsp_nope_nope"}
    unauthorized(httpx.post(f"{suite.tus}/files/", headers=forged))

    url = create_tus(suite, account, len(clip))
    unauthorized(httpx.delete(url, headers=TUS))
    unauthorized(httpx.patch(url, content=clip, headers={**PATCH, "Upload-Offset": "0"}))
    assert httpx.head(url, headers=TUS).status_code == 401
    # The upload is untouched and still its owner's.
    head = httpx.head(url, headers={**TUS, **account.headers})
    assert head.status_code == 200 and head.headers["upload-offset"] == "0"
    assert httpx.delete(url, headers={**TUS, **account.headers}).status_code == 204


def test_an_upload_is_its_owners_alone(
    suite: Suite, account: Account, stranger: Account, admin_account: Account, clip: bytes
) -> None:
    url = create_tus(suite, account, len(clip))
    upload_id = url.rstrip("/").rsplit("/", 1)[1]
    owner = {**TUS, **account.headers}
    video_id = httpx.head(url, headers=owner).headers[VIDEO_ID]
    # The upload's URL cannot be guessed from the video's public id.
    assert video_id != upload_id
    assert httpx.head(f"{suite.tus}/files/{video_id}", headers=owner).status_code == 404

    other = {**TUS, **stranger.headers}
    forbidden(httpx.delete(url, headers=other))
    forbidden(
        httpx.patch(url, content=clip, headers={**PATCH, **stranger.headers, "Upload-Offset": "0"})
    )
    assert httpx.head(url, headers=other).status_code == 403
    assert httpx.head(url, headers={**TUS, **admin_account.headers}).status_code == 200

    # Another account cannot join someone's partial upload into a video of its own.
    partial = create_tus(suite, account, len(clip), **{"Upload-Concat": "partial"})
    done = httpx.patch(
        partial, content=clip, headers={**PATCH, **account.headers, "Upload-Offset": "0"}
    )
    assert done.status_code == 204, done.text
    path = httpx.URL(partial).path
    join = {**TUS, **stranger.headers, "Upload-Concat": f"final;{path}"}
    forbidden(httpx.post(f"{suite.tus}/files/", headers=join))

    # The owner finishes the upload: the video is the owner's, with the privacy asked for.
    assert httpx.head(url, headers=owner).headers["upload-offset"] == "0"
    finished = httpx.patch(
        url, content=clip, headers={**PATCH, **account.headers, "Upload-Offset": "0"}
    )
    assert finished.status_code == 204, finished.text
    assert finished.headers[VIDEO_ID] == video_id
    video = httpx.get(f"{suite.tus}/api/videos/{video_id}").json()
    assert video["owner_id"] == str(account.user_id) and video["privacy"] == "public"


def test_privacy_is_chosen_at_upload(
    suite: Suite, account: Account, stranger: Account, clip: bytes
) -> None:
    raw = {**account.headers, "Content-Type": "video/mp4"}
    made = httpx.post(f"{suite.upload}/api/videos?privacy=private", content=clip, headers=raw)
    assert made.status_code == 201, made.text
    video_id = made.json()["id"]
    refused(httpx.get(f"{suite.upload}/api/videos/{video_id}"), 404)
    mine = httpx.get(f"{suite.upload}/api/videos/{video_id}", headers=account.headers).json()
    assert mine["privacy"] == "private" and mine["owner_id"] == str(account.user_id)
    # Its progress events, too, are its owner's alone.
    events = f"{suite.upload}/api/videos/{video_id}/events"
    refused(httpx.get(events), 404)
    refused(httpx.get(events, headers=stranger.headers), 404)
    with httpx.stream("GET", events, headers=account.headers, timeout=10) as stream:
        assert stream.status_code == 200
        first = next(stream.iter_lines())
        assert first == "event: progress", first
    refused(
        httpx.post(f"{suite.upload}/api/videos?privacy=secret", content=clip, headers=raw),
        400,
        error="invalid_metadata",
        mentions="privacy",
    )

    url = create_tus(suite, account, len(clip), **{"Upload-Metadata": f"privacy {b64('unlisted')}"})
    done = httpx.patch(
        url, content=clip, headers={**PATCH, **account.headers, "Upload-Offset": "0"}
    )
    assert done.status_code == 204, done.text
    video = httpx.get(f"{suite.tus}/api/videos/{done.headers[VIDEO_ID]}").json()
    assert video["privacy"] == "unlisted"
    bad = {"Upload-Metadata": f"privacy {b64('everyone')}"}
    refused(
        httpx.post(
            f"{suite.tus}/files/",
            headers={**TUS, **account.headers, "Upload-Length": "10", **bad},
        ),
        400,
        mentions="privacy",
    )


@dataclass(frozen=True)
class Seeded:
    """Ready videos of account A, one per privacy, whose titles share a searchable tag."""

    tag: str
    videos: dict[Privacy, SeededVideo]


@pytest.fixture
async def seeded(res: Resources, media_dir: Path, account: Account) -> Seeded:
    ladder = make_ladder(media_dir, seconds=4)
    tag = uuid.uuid4().hex[:10]
    videos = {
        privacy: await seed_video(
            res,
            ladder,
            title=f"{tag} {privacy.value}",
            seconds=4,
            owner_id=account.user_id,
            privacy=privacy,
        )
        for privacy in Privacy
    }
    return Seeded(tag, videos)


def test_only_the_owner_or_an_admin_edits_and_deletes(
    suite: Suite, seeded: Seeded, account: Account, stranger: Account, admin_account: Account
) -> None:
    video, other = seeded.videos[Privacy.public], seeded.videos[Privacy.unlisted]
    url = f"{suite.origin}/api/videos/{video.id}"
    forbidden(httpx.patch(url, json={"title": "taken"}, headers=stranger.headers))
    forbidden(httpx.delete(url, headers=stranger.headers))
    unauthorized(httpx.patch(url, json={"title": "taken"}))
    unauthorized(httpx.delete(url))
    assert httpx.get(url).json()["title"] == f"{seeded.tag} public"

    edit = {"title": "renamed", "tags": ["a", "b"], "privacy": "private"}
    edited = httpx.patch(url, json=edit, headers=account.headers)
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert (body["title"], body["tags"], body["privacy"]) == ("renamed", ["a", "b"], "private")
    assert httpx.get(url).status_code == 404  # private now
    refused(httpx.patch(url, json={"title": "t\0"}, headers=account.headers), 400)
    assert httpx.patch(url, json={"privacy": "secret"}, headers=account.headers).status_code == 422
    by_admin = httpx.patch(url, json={"privacy": "public"}, headers=admin_account.headers)
    assert by_admin.status_code == 200 and by_admin.json()["privacy"] == "public"

    assert httpx.delete(url, headers=account.headers).status_code == 204
    assert httpx.get(url).status_code == 404
    operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (
        httpx.delete(f"{suite.origin}/api/videos/{other.id}", headers=operator).status_code == 204
    )


def test_privacy_decides_who_streams_and_who_lists(
    suite: Suite, seeded: Seeded, account: Account, stranger: Account, admin_account: Account
) -> None:
    tag, videos = seeded.tag, seeded.videos
    public, unlisted, private = (videos[p] for p in Privacy)

    def stream(video: SeededVideo, who: Account | None, **params: str) -> httpx.Response:
        headers = who.headers if who else {}
        return httpx.get(f"{suite.origin}/api/stream/{video.id}", params=params, headers=headers)

    for who in (None, stranger):
        assert stream(public, who).status_code == 200
        assert stream(unlisted, who).status_code == 200  # by link
        refused(stream(private, who), 404, error="not_found")
        refused(
            httpx.get(
                f"{suite.origin}/api/videos/{private.id}", headers=who.headers if who else {}
            ),
            404,
        )
    for who in (account, admin_account):
        assert "master_url" in stream(private, who).json()
    refresh = {"video_id": str(private.id)}
    assert httpx.post(f"{suite.origin}/api/stream/refresh", json=refresh).status_code == 404

    def listed(who: Account | None, **params: str) -> set[str]:
        headers = who.headers if who else {}
        query = {"q": tag, "limit": "100", **params}
        page = httpx.get(f"{suite.origin}/api/videos", params=query, headers=headers)
        assert page.status_code == 200, page.text
        return {item["id"] for item in page.json()["items"]}

    everyone = {str(v.id) for v in videos.values()}
    assert listed(None) == listed(stranger) == {str(public.id)}
    assert listed(account) == listed(admin_account) == everyone
    assert listed(account, mine="true") == everyone
    assert listed(stranger, mine="true") == set()
    unauthorized(httpx.get(f"{suite.origin}/api/videos", params={"mine": "true"}))

    # The gateway's artist_id: the owner's channel, or nothing.
    assert stream(public, None, artist_id=account.name).status_code == 200
    refused(stream(public, None, artist_id=stranger.name), 404)
    refused(stream(public, None, artist_id="no-such-channel"), 404)
    refused(stream(private, stranger, artist_id=account.name), 404)
