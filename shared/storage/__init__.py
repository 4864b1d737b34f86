"""Object storage behind one interface: a filesystem backend (default) and S3/MinIO."""

from shared.storage.base import ObjectInfo, ObjectStore
from shared.storage.factory import create_store

__all__ = ["ObjectInfo", "ObjectStore", "create_store"]
