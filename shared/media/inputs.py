"""What ffprobe and ffmpeg may read from an uploaded file: one local file in a known container.

An upload is untrusted. Left to itself, ffmpeg follows what a file names: an HLS playlist
fetches its URLs (from inside our network) or reads local files, a concat script or an image
sequence pulls in other files. So every run on a source reads it through the ``file``
protocol only, with only the demuxers of ordinary single-file containers; the probed format is
checked once more against the demuxers that refer to other files, in case the list above ever
grows one.
"""

from __future__ import annotations

from shared.core.errors import NotMedia

# Demuxer names as ``ffmpeg -demuxers`` prints them; a demuxer matches when one of its names is
# listed ("mov,mp4,m4a,3gp,3g2,mj2" and "matroska,webm" are one demuxer each).
ACCEPTED_FORMATS: tuple[str, ...] = (
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "ogg",
    "asf",
    "wav",
    "mp3",
    "aac",
    "flac",
)
ACCEPTED_PROTOCOLS: tuple[str, ...] = ("file",)

# Demuxers whose input names other inputs (playlists, manifests, scripts, sequences, sessions).
REFERRING_FORMATS = frozenset(
    {
        "hls",
        "applehttp",
        "dash",
        "webm_dash_manifest",
        "concat",
        "image2",
        "image2pipe",
        "imf",
        "sdp",
        "rtp",
        "rtsp",
        "ffmetadata",
        "lavfi",
        "tee",
        "avisynth",
        "vapoursynth",
    }
)


def input_args() -> list[str]:
    """Per-input options for ffprobe and ffmpeg; they must come before the ``-i`` they guard."""
    return [
        "-protocol_whitelist",
        ",".join(ACCEPTED_PROTOCOLS),
        "-format_whitelist",
        ",".join(ACCEPTED_FORMATS),
    ]


def check_format(format_name: str) -> None:
    """Raise NotMedia when the probed container is one that refers to other files."""
    names = {name.strip() for name in format_name.split(",") if name.strip()}
    # Single-image demuxers ("png_pipe", "jpeg_pipe", ...) read image sequences.
    if names & REFERRING_FORMATS or any(name.endswith("_pipe") for name in names):
        raise NotMedia(
            f"the {format_name} format is not accepted: upload the media itself, "
            "not a playlist, a list of files or an image sequence"
        )
    if not names & set(ACCEPTED_FORMATS):
        raise NotMedia(f"the {format_name} format is not accepted")
