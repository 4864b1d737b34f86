"""Edge admin request and response bodies."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PurgeRequest(BaseModel):
    paths: list[str] = Field(default_factory=list, max_length=10_000)
    prefixes: list[str] = Field(default_factory=list, max_length=1_000)


class PurgeResponse(BaseModel):
    purged: int


class WarmRequest(BaseModel):
    master_path: str = Field(description="Object path of a master playlist")


class WarmResponse(BaseModel):
    stored: int


class CacheStats(BaseModel):
    edge_id: str
    disk_bytes: int
    disk_capacity_bytes: int
    disk_objects: int
    memory_bytes: int
    memory_capacity_bytes: int
    hit_ratio: float
