"""Build the configured object store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from shared.storage.base import ObjectStore
from shared.storage.filesystem import FilesystemStore


def create_store(
    backend: Literal["fs", "s3"],
    *,
    root: Path | None = None,
    endpoint: str = "",
    access_key: str = "",
    secret_key: str = "",
    bucket: str = "",
    secure: bool = False,
    region: str | None = None,
) -> ObjectStore:
    """The filesystem store under ``root``, or the S3 store for ``bucket`` at ``endpoint``."""
    if backend == "fs":
        if root is None:
            raise ValueError("the filesystem store needs a root folder")
        return FilesystemStore(root)
    from shared.storage.s3 import S3Store

    return S3Store(
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        secure=secure,
        region=region,
    )
