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
    transcoder_job_timeout_seconds: float = Field(
        default=12 * 3600,
        gt=0,
        description="Longest any job may run; room for the longest source MEDIA_MAX_* allows. "
        "Keep RabbitMQ's consumer_timeout above it",
    )
    transcoder_job_overhead_seconds: float = Field(
        default=600,
        ge=0,
        description="A transcode job's time beyond ffmpeg's budget for its duration (waiting "
        "for the video's lease, probing, storing the ladder); the sum is its timeout",
    )
    transcoder_encode_timeout_base_seconds: float = Field(
        default=300, ge=0, description="ffmpeg's time budget: this plus the factor per media second"
    )
    transcoder_encode_timeout_factor: float = Field(
        default=2.5,
        gt=0,
        description="Wall seconds ffmpeg may take per second of source; at most the job timeout",
    )
    transcoder_preset: str = "veryfast"
    transcoder_segment_seconds: int = 4
    transcoder_gop_seconds: int = 2
    transcoder_poll_min_seconds: float = 0.05
    transcoder_poll_max_seconds: float = 2.0
    transcoder_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads of ffmpeg's decoder, filter graph and each encoder",
    )
    transcoder_lease_seconds: float = 10
    transcoder_publish_interval_seconds: float = 0.5
    transcoder_max_rungs: int = Field(default=0, ge=0, description="Top rungs kept; 0 keeps all")
    transcoder_old_run_grace_seconds: float = Field(
        default=60,
        ge=0,
        le=86_400,
        description="How long a re-transcoded video's replaced run stays stored after the "
        "switch, for viewers still playing the playlists they were handed",
    )
