"""Settings refuse unsafe secrets, and fault injection in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.chunked_upload.settings import Settings as ChunkedUploadSettings
from shared.core.settings import DEV_SIGNING_SECRET, BaseServiceSettings


def test_short_secret_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        BaseServiceSettings(signing_secret="short")


def test_default_secret_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="real secret"):
        BaseServiceSettings(environment="production", signing_secret=DEV_SIGNING_SECRET)
    ok = BaseServiceSettings(environment="production", signing_secret="x" * 32)
    assert ok.signing_keys == {"k1": "x" * 32}


def test_previous_keys_still_verify() -> None:
    s = BaseServiceSettings(
        signing_secret="new-secret-0123456789",
        signing_key_id="k2",
        signing_previous_keys={"k1": "old-secret-0123456789"},
    )
    assert s.signing_keys == {"k1": "old-secret-0123456789", "k2": "new-secret-0123456789"}


def test_fault_injection_refused_in_production() -> None:
    stall = {"chunked_upload_fault_stall_at": "assembled", "signing_secret": "x" * 32}
    with pytest.raises(ValidationError, match="CHUNKED_UPLOAD_FAULT_STALL_AT"):
        ChunkedUploadSettings(environment="production", **stall)
    assert ChunkedUploadSettings(environment="test", **stall).chunked_upload_fault_stall_at
