"""Transcoding worker settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.core import ports
from shared.core.settings import BaseServiceSettings


class Settings(BaseServiceSettings):
    transcoder_mode: Literal["push", "pull"] = "push"
    transcoder_metrics_port: int = ports.WORKER_METRICS
    transcoder_work_dir: Path | None = None
    transcoder_job_timeout_seconds: float = 3600
    transcoder_preset: str = "veryfast"
    transcoder_segment_seconds: int = 4
    transcoder_gop_seconds: int = 2
    transcoder_poll_min_seconds: float = 0.05
    transcoder_poll_max_seconds: float = 2.0
    transcoder_threads: int = 0
    transcoder_lease_seconds: float = 10
    transcoder_publish_interval_seconds: float = 0.5
    transcoder_max_rungs: int = Field(default=0, ge=0, description="Top rungs kept; 0 keeps all")
