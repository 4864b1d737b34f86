"""The shape of the one ffmpeg command per ladder: options, maps, encoders, muxer, outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.ffmpeg import (
    EncodeOptions,
    build_command,
    poster_seconds,
    time_budget_seconds,
)
from services.transcoder.ladder import Rung, plan_ladder
from services.transcoder.previews import plan_for, sheets_command
from shared.media.ffprobe import MediaInfo
from shared.media.inputs import ACCEPTED_FORMATS

OUT = Path("/out")
POSTER = Path("/out/poster.jpg")


def media(*, video: bool = True, audio: bool = True, fps: float | None = 30) -> MediaInfo:
    return MediaInfo(
        duration_seconds=30,
        format_name="mov,mp4",
        bit_rate=None,
        has_video=video,
        has_audio=audio,
        width=1920 if video else None,
        height=1080 if video else None,
        frame_rate=fps if video else None,
    )


def command(
    info: MediaInfo,
    rungs: list[Rung] | None = None,
    opts: EncodeOptions | None = None,
    poster: Path | None = None,
) -> list[str]:
    ladder = plan_ladder(info) if rungs is None else rungs
    return build_command("in.mp4", OUT, info, ladder, opts or EncodeOptions(), poster=poster)


def value(cmd: list[str], option: str) -> str:
    return cmd[cmd.index(option) + 1]


def maps(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-map"]


def test_global_options_and_progress_come_before_the_single_input() -> None:
    cmd = command(media())
    assert cmd[: cmd.index("-progress") + 4] == [
        "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        "-filter_complex_threads",
        "4",
        "-progress",
        "pipe:1",
        "-stats_period",
        "1",
    ]
    assert cmd.count("-i") == 1


def test_the_input_is_read_as_one_local_file_in_an_accepted_container() -> None:
    cmd = command(media(), opts=EncodeOptions(max_decode_pixels=1000))
    given = cmd[cmd.index("-stats_period") + 2 : cmd.index("-i") + 2]
    # Per-input options apply to the next -i only, so they sit right before it.
    assert given == [
        "-threads",
        "4",
        "-max_pixels",
        "1000",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(ACCEPTED_FORMATS),
        "-i",
        "in.mp4",
    ]
    formats = value(cmd, "-format_whitelist").split(",")
    assert {"mov", "matroska", "mpegts", "wav"} <= set(formats)
    assert not {"hls", "concat", "image2", "sdp", "dash"} & set(formats)
    assert "-max_pixels" not in command(media())


def test_video_with_audio_maps_one_audio_copy_per_rung() -> None:
    info = media()
    rungs = plan_ladder(info)
    cmd = command(info, rungs)
    n = len(rungs)
    assert maps(cmd) == [f"[v{i}]" for i in range(n)] + ["0:a:0"] * n
    assert value(cmd, "-c:v") == "libx264" and value(cmd, "-c:a") == "aac"
    assert value(cmd, "-b:a") == f"{rungs[0].audio_kbps}k"
    assert value(cmd, "-ac") == "2" and value(cmd, "-ar") == "48000"
    for i, rung in enumerate(rungs):
        assert value(cmd, f"-b:v:{i}") == f"{rung.video_kbps}k"
        assert value(cmd, f"-maxrate:v:{i}") == f"{rung.maxrate_kbps}k"
        assert value(cmd, f"-bufsize:v:{i}") == f"{rung.bufsize_kbps}k"
    assert value(cmd, "-var_stream_map").split() == [
        f"v:{i},a:{i},name:{r.name}" for i, r in enumerate(rungs)
    ]


def test_video_only_source_has_no_audio_maps_or_encoder() -> None:
    info = media(audio=False)
    rungs = plan_ladder(info)
    cmd = command(info, rungs)
    assert maps(cmd) == [f"[v{i}]" for i in range(len(rungs))]
    assert "-c:a" not in cmd and "-b:a" not in cmd
    assert value(cmd, "-var_stream_map").split() == [
        f"v:{i},name:{r.name}" for i, r in enumerate(rungs)
    ]


def test_audio_only_ladder_encodes_one_aac_stream_per_rung_and_takes_no_poster() -> None:
    info = media(video=False)
    rungs = plan_ladder(info)
    cmd = command(info, rungs, poster=POSTER)
    assert "-filter_complex" not in cmd and "-c:v" not in cmd
    assert maps(cmd) == ["0:a:0"] * len(rungs)
    assert [value(cmd, f"-b:a:{i}") for i in range(len(rungs))] == ["256k", "160k", "96k"]
    assert value(cmd, "-var_stream_map") == "a:0,name:aac_256 a:1,name:aac_160 a:2,name:aac_96"
    assert cmd[-1] == str(OUT / "%v" / "index.m3u8")


def test_one_rung_without_a_poster_needs_no_split() -> None:
    info = media()
    rung = plan_ladder(info)[0]
    graph = value(command(info, [rung]), "-filter_complex")
    assert (
        graph
        == f"[0:v:0]scale={rung.width}:{rung.height}:flags=bicubic,setsar=1,format=yuv420p[v0]"
    )


def test_the_poster_is_one_more_branch_of_the_split_and_the_last_output() -> None:
    info = media()
    rungs = plan_ladder(info)[:5]
    cmd = command(info, rungs, poster=POSTER)
    chains = value(cmd, "-filter_complex").split(";")
    assert chains[0] == "[0:v:0]split=6" + "".join(f"[s{i}]" for i in range(6))
    assert [c.split("scale=")[0] for c in chains[1:6]] == [f"[s{i}]" for i in range(5)]
    assert chains[6].startswith(f"[s5]select='gte(t\\,{poster_seconds(info)})'")
    assert chains[6].endswith("[poster]")
    assert cmd[-9:] == [
        "-map",
        "[poster]",
        "-frames:v",
        "1",
        "-q:v",
        "4",
        "-threads",
        "4",
        str(POSTER),
    ]


def test_keyframes_follow_the_gop_and_default_to_30_fps() -> None:
    opts = EncodeOptions(gop_seconds=3)
    assert value(command(media(fps=25), opts=opts), "-g") == "75"
    cmd = command(media(fps=None), opts=opts)
    assert value(cmd, "-g") == value(cmd, "-keyint_min") == "90"
    assert value(cmd, "-force_key_frames") == "expr:gte(t,n_forced*3)"


def test_threads_are_bounded_for_the_decoder_the_filters_and_every_output() -> None:
    cmd = command(media(), opts=EncodeOptions(threads=3), poster=POSTER)
    assert value(cmd, "-filter_complex_threads") == "3"
    at = [i for i, arg in enumerate(cmd) if arg == "-threads"]
    assert [cmd[i + 1] for i in at] == ["3", "3", "3"]
    decoder, hls, poster = at
    assert decoder < cmd.index("-i") < hls < cmd.index("-f") < poster < len(cmd) - 1
    audio_only = command(media(video=False), opts=EncodeOptions(threads=2))
    assert audio_only.count("-threads") == 2


def test_the_time_budget_grows_with_the_duration_up_to_the_cap() -> None:
    def budget(seconds: float) -> float:
        return time_budget_seconds(seconds, base_seconds=300, factor=2.5, cap_seconds=43_200)

    assert budget(10) == pytest.approx(325)
    assert budget(600) == pytest.approx(1800)
    assert budget(3600) == 2 * budget(1800) - 300
    assert budget(4 * 3600) == pytest.approx(36_300)
    assert budget(24 * 3600) == 43_200


def test_hls_muxer_writes_fmp4_event_playlists_per_variant() -> None:
    cmd = command(media(), opts=EncodeOptions(segment_seconds=6))
    hls = cmd[cmd.index("-f") :]
    assert hls[:2] == ["-f", "hls"]
    assert value(hls, "-hls_time") == "6"
    assert value(hls, "-hls_playlist_type") == "event"
    assert value(hls, "-hls_segment_type") == "fmp4"
    assert value(hls, "-hls_flags") == "independent_segments+temp_file"
    assert value(hls, "-hls_fmp4_init_filename") == "init.mp4"
    assert value(hls, "-hls_segment_filename") == str(OUT / "%v" / "seg_%05d.m4s")
    assert value(hls, "-master_pl_name") == "master.m3u8"
    assert hls[-1] == str(OUT / "%v" / "index.m3u8")


def test_previews_leave_the_encode_as_single_tiles_laid_out_in_sheets_afterwards() -> None:
    info = media()
    rungs = plan_ladder(info)[:2]
    sprites = plan_for(info.duration_seconds, rungs)
    assert sprites is not None
    cmd = build_command(
        "in.mp4", OUT, info, rungs, EncodeOptions(), poster=POSTER, sprites=sprites, sprite_dir=OUT
    )
    chains = value(cmd, "-filter_complex").split(";")
    assert chains[0] == "[0:v:0]split=4[s0][s1][s2][s3]"
    # No tile filter in the encode: ffmpeg reports no progress before every output's first
    # frame, and a sheet would come out only once whole.
    assert chains[-1] == (
        "[s3]fps=1/1:start_time=0:round=up,scale=160:90:flags=bicubic,setsar=1[tiles]"
    )
    assert "tile=" not in value(cmd, "-filter_complex")
    tiles = cmd[cmd.index("[tiles]") - 1 :]
    assert value(tiles, "-frames:v") == "30" and value(tiles, "-start_number") == "0"
    assert tiles[-2:] == ["image2", str(OUT / "thumb-%05d.jpg")]

    sheets = sheets_command(OUT, sprites)
    assert sheets[sheets.index("-i") + 1] == str(OUT / "thumb-%05d.jpg")
    assert value(sheets, "-vf") == "tile=10x3" and value(sheets, "-frames:v") == "1"
    assert sheets[-1] == str(OUT / "sprites-%d.jpg")


def test_an_audio_only_ladder_has_no_preview_branch() -> None:
    info = media(video=False)
    rungs = plan_ladder(info)
    sprites = plan_for(30, plan_ladder(media()))
    cmd = build_command(
        "in.mp4", OUT, info, rungs, EncodeOptions(), sprites=sprites, sprite_dir=OUT
    )
    assert "[tiles]" not in cmd and not any("thumb-" in arg for arg in cmd)
