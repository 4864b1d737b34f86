"""Who may see a video, and the privacy values an upload or an edit may ask for."""

from __future__ import annotations

import uuid

import pytest

from shared.db.models import Privacy, Role, Video
from shared.http.auth import Principal
from shared.videos.access import may_view
from shared.videos.metadata import InvalidMetadata, MetadataInput, check_privacy

OWNER = Principal(uuid.uuid4(), "owner", Role.uploader.value)
STRANGER = Principal(uuid.uuid4(), "stranger", Role.uploader.value)
ADMIN = Principal(uuid.uuid4(), "admin", Role.admin.value)


def _video(privacy: Privacy, owner_id: uuid.UUID | None = OWNER.user_id) -> Video:
    return Video(id=uuid.uuid4(), owner_id=owner_id, privacy=privacy.value)


@pytest.mark.parametrize("privacy", [Privacy.public, Privacy.unlisted])
def test_public_and_unlisted_videos_are_seen_by_everyone(privacy: Privacy) -> None:
    video = _video(privacy)
    assert all(may_view(video, who) for who in (None, STRANGER, OWNER, ADMIN))


def test_a_private_video_is_seen_by_its_owner_and_admins_only() -> None:
    video = _video(Privacy.private)
    assert [may_view(video, who) for who in (None, STRANGER, OWNER, ADMIN)] == [
        False,
        False,
        True,
        True,
    ]
    # A video from before accounts existed has no owner: admins only.
    orphan = _video(Privacy.private, owner_id=None)
    assert not may_view(orphan, OWNER) and may_view(orphan, ADMIN)


def test_privacy_values() -> None:
    assert check_privacy("") is Privacy.public
    assert [check_privacy(p.value) for p in Privacy] == list(Privacy)
    for wrong in ("Public", "secret", " private"):
        with pytest.raises(InvalidMetadata, match="privacy must be one of"):
            check_privacy(wrong)
    assert MetadataInput(privacy="unlisted").checked().privacy is Privacy.unlisted
    assert MetadataInput().checked().privacy is Privacy.public
