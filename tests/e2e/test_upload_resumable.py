"""``vsp upload --resumable``: killed clients and a killed server resume byte-exact."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from shared.db.models import Upload
from shared.runtime.resources import Resources
from tests.support.accounts import Account
from tests.support.infra import private_queues
from tests.support.media import MIB, make_clip, padded_media, sha256_file
from tests.support.paths import ROOT
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.processes import VSP, Processes
from tests.support.upload import TUS, client_env, source_sha256, video_id_of


@pytest.fixture(scope="module")
def queues(test_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """No worker runs here: the jobs of these uploads go to queues of their own, not to the
    session's, where the worker of a later test would transcode them first."""
    with private_queues("upload-resumable") as env:
        yield env


@pytest.fixture
def source(media_dir: Path) -> Path:
    clip = make_clip(media_dir / "resumable-clip.mp4", seconds=2, size="320x180")
    return padded_media(clip, media_dir / "resumable-4m.mp4", 4 * MIB + 321)


def cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VSP, "upload", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def saved_urls(home: Path) -> list[str]:
    path = home / ".cache" / "vsp" / "resumable-uploads.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return next(iter(state.values()), [])


def server_offset(url: str, account: Account) -> int:
    response = httpx.head(url, headers={**TUS, **account.headers}, timeout=5)
    return int(response.headers["upload-offset"]) if response.status_code == 200 else -1


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{") :]), out


async def test_cli_killed_mid_upload_resumes(
    procs: Processes,
    test_env: dict[str, str],
    tmp_path: Path,
    source: Path,
    res: Resources,
    queues: dict[str, str],
    account: Account,
) -> None:
    service = procs.service("chunked_upload", env=queues)
    env = {**client_env(account), **test_env, "HOME": str(tmp_path)}
    args = ["--resumable", "--url", service.url or "", "--chunk-size", str(128 * 1024), str(source)]
    first = cli(env, *args, "--limit-rate", str(MIB))
    url = wait_for(lambda: (saved_urls(tmp_path) or [None])[0], timeout=60, what="upload created")
    wait_for(lambda: server_offset(url, account) >= MIB, timeout=60, what="a first MiB stored")
    first.kill()
    first.wait()
    reached = server_offset(url, account)
    assert 0 < reached < source.stat().st_size

    second = cli(env, *args)
    video, out = finish(second)
    assert video["id"] == video_id_of(url, account)  # the same upload went on
    assert "resuming" in out
    assert await source_sha256(res.need_store(), video["id"]) == sha256_file(source)
    assert video["sha256"] == sha256_file(source) and video["state"] in (
        "queued",
        "transcoding",
        "ready",
    )


async def test_server_killed_mid_upload_then_restarted(
    procs: Processes,
    test_env: dict[str, str],
    tmp_path: Path,
    source: Path,
    res: Resources,
    queues: dict[str, str],
    account: Account,
) -> None:
    port = free_port()
    env = {"CHUNKED_UPLOAD_LOCK_TTL_SECONDS": "2", **queues}
    service = procs.service("chunked_upload", port=port, env=env)
    upload = cli(
        {**client_env(account), **test_env, "HOME": str(tmp_path)},
        "--resumable",
        "--url",
        service.url or "",
        "--chunk-size",
        str(256 * 1024),
        "--limit-rate",
        str(MIB),
        str(source),
    )
    url = wait_for(lambda: (saved_urls(tmp_path) or [None])[0], timeout=60, what="upload created")
    wait_for(lambda: server_offset(url, account) >= MIB, timeout=60, what="a first MiB stored")
    service.kill()  # SIGKILL, mid-request most likely: the client sees its connection drop
    procs.service("chunked_upload", port=port, env=env)
    video, _ = finish(upload)
    assert video["id"] == video_id_of(url, account)
    assert await source_sha256(res.need_store(), video["id"]) == sha256_file(source)


async def test_cli_parallel_partial_uploads(
    procs: Processes,
    test_env: dict[str, str],
    tmp_path: Path,
    source: Path,
    res: Resources,
    queues: dict[str, str],
    account: Account,
) -> None:
    service = procs.service("chunked_upload", env=queues)
    proc = cli(
        {**client_env(account), **test_env, "HOME": str(tmp_path)},
        "--resumable",
        "--parallel",
        "4",
        "--url",
        service.url or "",
        "--title",
        "four parts",
        str(source),
    )
    video, _ = finish(proc)
    assert video["title"] == "four parts" and video["size_bytes"] == source.stat().st_size
    async with res.need_db().session() as session:
        final = await session.scalar(select(Upload).where(Upload.video_id == video["id"]))
    assert final is not None and final.partials is not None and len(final.partials) == 4
    assert final.owner_id == account.user_id
    assert await source_sha256(res.need_store(), video["id"]) == sha256_file(source)
