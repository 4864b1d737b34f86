"""``vsp``: one command for the whole platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.accounts import (
    DEFAULT_ORIGIN_URL,
    ApiKey,
    keys_app,
    login,
    logout,
    user_app,
)
from services.cli.jobs import jobs_app
from services.runtime.registry import SERVICES
from shared.core import ports

app = typer.Typer(
    help="Video streaming platform: run the suite, its services and workers; upload and play.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_UPLOAD_URL = ports.local_url(ports.UPLOAD)
DEFAULT_CHUNKED_UPLOAD_URL = ports.local_url(ports.CHUNKED_UPLOAD)


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Make, upload and wait for a demo clip.")] = True,
    run_dir: Annotated[Path, typer.Option(help="Where logs, objects and the demo clip go.")] = Path(
        "var"
    ),
) -> None:
    """Run the whole suite locally as real processes; Ctrl-C stops them all."""
    from services.cli.up import run_suite

    raise typer.Exit(run_suite(run_dir=run_dir, demo=demo))


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port; default from the settings.")] = None,
) -> None:
    """Serve one HTTP service."""
    spec = SERVICES.get(name)
    if spec is None:
        raise typer.BadParameter(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
    from services.runtime.serve import serve_service

    serve_service(spec, host=host, port=port)


@app.command()
def worker(
    mode: Annotated[
        str, typer.Option(help="push (basic_consume) or pull (basic_get polling).")
    ] = "push",
    metrics_port: Annotated[
        int | None, typer.Option(help="Port of the worker's /metrics; 0 disables it.")
    ] = None,
) -> None:
    """Run a transcoding worker until SIGTERM (which hands the current job back)."""
    if mode not in ("push", "pull"):
        raise typer.BadParameter("mode must be push or pull")
    from services.runtime.settings import load_settings
    from services.transcoder.settings import Settings
    from services.transcoder.worker import run

    overrides: dict[str, object] = {"transcoder_mode": mode}
    if metrics_port is not None:
        overrides["transcoder_metrics_port"] = metrics_port
    run(load_settings(Settings, **overrides))


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create the database if needed and apply migrations (DATABASE_URL)."""
    from services.runtime.settings import load_settings
    from shared.core.settings import BaseServiceSettings
    from shared.db.migrate import upgrade

    url = load_settings(BaseServiceSettings).database_url
    upgrade(url, revision)
    typer.echo(f"database migrated to {revision}")


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    url: Annotated[
        str | None,
        typer.Option(
            help=f"Service base URL; default: upload ({ports.UPLOAD}), "
            f"or chunked_upload ({ports.CHUNKED_UPLOAD}) with --resumable."
        ),
    ] = None,
    title: Annotated[str, typer.Option(help="Video title.")] = "",
    description: Annotated[str, typer.Option(help="Video description.")] = "",
    tags: Annotated[str, typer.Option(help="Comma-separated tags.")] = "",
    resumable: Annotated[
        bool, typer.Option(help="Use tus: survives interruptions; run again to resume.")
    ] = False,
    parallel: Annotated[
        int, typer.Option(min=1, max=16, help="With --resumable: parallel partial uploads.")
    ] = 1,
    chunk_size: Annotated[
        int, typer.Option(min=1024, help="With --resumable: bytes per PATCH request.")
    ] = 8 * 1024 * 1024,
    limit_rate: Annotated[
        int | None, typer.Option(min=1, help="With --resumable: at most this many bytes/s.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the video is ready.")] = False,
    api_key: ApiKey = None,
) -> None:
    """Upload a video file with a progress bar as your account; prints the new video's JSON."""
    from services.cli.client import resumable_upload, stream_upload, wait_ready
    from services.cli.credentials import auth_headers

    headers = auth_headers(api_key)

    if resumable:
        url = url or DEFAULT_CHUNKED_UPLOAD_URL
        video = resumable_upload(
            url,
            file,
            title=title or file.stem,
            description=description,
            tags=tags,
            parallel=parallel,
            chunk_bytes=chunk_size,
            limit_bytes_per_second=limit_rate,
            headers=headers,
        )
    else:
        url = url or DEFAULT_UPLOAD_URL
        video = stream_upload(
            url, file, title=title or file.stem, description=description, tags=tags, headers=headers
        )
    typer.echo(json.dumps(video, indent=2))
    if wait:
        final = wait_ready(url, video["id"], headers=headers)
        typer.echo(f"video {video['id']}: {final['state']}")
        if final["state"] != "ready":
            raise typer.Exit(1)


@app.command()
def status(
    video_id: Annotated[str, typer.Argument(help="The video's id.")],
    url: Annotated[str, typer.Option(help="Origin base URL.")] = DEFAULT_ORIGIN_URL,
    wait: Annotated[bool, typer.Option(help="Follow until ready or failed.")] = False,
    api_key: ApiKey = None,
) -> None:
    """Show a video's state, progress and renditions."""
    from services.cli.client import get_json, wait_ready
    from services.cli.credentials import auth_headers

    headers = auth_headers(api_key)
    video = (
        wait_ready(url, video_id, headers=headers)
        if wait
        else get_json(f"{url}/api/videos/{video_id}", headers)
    )
    typer.echo(json.dumps(video, indent=2))


@app.command("url")
def play_url(
    video_id: Annotated[str, typer.Argument(help="The video's id.")],
    url: Annotated[str, typer.Option(help="Origin base URL.")] = DEFAULT_ORIGIN_URL,
    api_key: ApiKey = None,
) -> None:
    """Print the signed master playlist URL of a ready video (a private one needs its owner)."""
    from services.cli.client import get_json
    from services.cli.credentials import auth_headers

    stream = get_json(f"{url}/api/stream/{video_id}", auth_headers(api_key))
    typer.echo(stream["master_url"])


app.add_typer(user_app, name="user")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.command()(login)
app.command()(logout)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
