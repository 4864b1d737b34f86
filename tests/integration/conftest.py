"""Integration fixtures: an empty object store of each backend (S3: the session's moto server)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.storage.base import ObjectStore
from shared.storage.filesystem import FilesystemStore
from shared.storage.s3 import S3Store

_RUN_ID = uuid.uuid4().hex[:10]
_buckets = itertools.count(1)


@pytest.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """An empty store of each backend; S3 gets a fresh bucket, created on first use."""
    backend: ObjectStore
    if request.param == "fs":
        backend = FilesystemStore(tmp_path / "objects")
    else:
        endpoint: str = request.getfixturevalue("moto_endpoint")
        backend = S3Store(
            endpoint=endpoint,
            access_key="testing",
            secret_key="testing",
            bucket=f"vsp-test-{_RUN_ID}-{next(_buckets)}",
            region="us-east-1",
            part_bytes=S3Store.min_part_bytes,
        )
    try:
        yield backend
    finally:
        await backend.close()
