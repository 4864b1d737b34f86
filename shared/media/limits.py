"""How much media one upload may hold: every bound on what a transcode of it will cost."""

from __future__ import annotations

from dataclasses import dataclass

from shared.core.errors import NotMedia
from shared.core.settings import BaseServiceSettings
from shared.media.ffprobe import MediaInfo


@dataclass(frozen=True)
class MediaLimits:
    max_duration_seconds: float
    max_width_pixels: int
    max_height_pixels: int
    max_frame_pixels: int
    max_frame_rate_fps: float
    max_streams: int

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> MediaLimits:
        """The limits a process was configured with (``MEDIA_MAX_*``)."""
        return cls(
            max_duration_seconds=settings.media_max_duration_seconds,
            max_width_pixels=settings.media_max_width_pixels,
            max_height_pixels=settings.media_max_height_pixels,
            max_frame_pixels=settings.media_max_frame_pixels,
            max_frame_rate_fps=settings.media_max_frame_rate_fps,
            max_streams=settings.media_max_streams,
        )

    def check(self, info: MediaInfo) -> None:
        """Raise NotMedia naming the first limit ``info`` exceeds."""
        kind = "video" if info.has_video else "audio"
        if info.duration_seconds > self.max_duration_seconds:
            raise NotMedia(
                f"the {kind} is {info.duration_seconds:.0f} s long; "
                f"the limit is {self.max_duration_seconds:.0f} s"
            )
        if info.stream_count > self.max_streams:
            raise NotMedia(
                f"the file has {info.stream_count} streams; the limit is {self.max_streams}"
            )
        if info.width is not None and info.width > self.max_width_pixels:
            raise NotMedia(
                f"the video is {info.width} pixels wide; the limit is {self.max_width_pixels}"
            )
        if info.height is not None and info.height > self.max_height_pixels:
            raise NotMedia(
                f"the video is {info.height} pixels high; the limit is {self.max_height_pixels}"
            )
        if info.width is not None and info.height is not None:
            pixels = info.width * info.height
            if pixels > self.max_frame_pixels:
                raise NotMedia(
                    f"the video's frames have {pixels} pixels ({info.width}x{info.height}); "
                    f"the limit is {self.max_frame_pixels}"
                )
        if info.frame_rate is not None and info.frame_rate > self.max_frame_rate_fps:
            raise NotMedia(
                f"the video runs at {info.frame_rate:g} frames per second; "
                f"the limit is {self.max_frame_rate_fps:g}"
            )
