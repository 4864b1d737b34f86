"""The whole pipeline on the S3 store (moto's server): upload, ladder, play through an edge, delete.

Every process runs with ``STORAGE_BACKEND=s3`` on a bucket of the test's own, as ``make up``
runs them on MinIO: the streamed upload service and the tus service write the sources, a push
worker the ladders, the origin signs and serves them and an edge in front of it plays them.
Deleting the videos must leave the bucket empty: no source, no rung, no tus part.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import boto3
import httpx
import pytest

from shared.media import hls

# The streamed upload and the wait for a state, as the first video's test does them.
from tests.support.accounts import Account
from tests.support.edge import start_edge
from tests.support.hls import variant_streams
from tests.support.infra import private_queues
from tests.support.media import MIB, make_clip, padded_media
from tests.support.ports import free_port
from tests.support.processes import Processes
from tests.support.upload import (
    PATCH,
    TUS,
    stream_upload_file,
    tus_storage,
    video_id_of,
    wait_state,
)

RENDITIONS = ["720p", "480p", "360p", "240p"]  # the whole ladder of a 720p source


@dataclass
class Pipeline:
    env: dict[str, str]  # what every process runs with on top of the session's environment
    upload: str
    tus: str
    origin: str
    edge: str


@pytest.fixture
def pipeline(procs: Processes, moto_endpoint: str, tmp_path: Path) -> Iterator[Pipeline]:
    """Upload, tus, a push worker, origin and an edge, all on one bucket and queues of their own."""
    with private_queues(f"s3-{uuid.uuid4().hex[:6]}") as queues:
        env = {**queues, **tus_storage("s3", moto_endpoint)}
        upload = procs.service("upload", env=env)
        tus = procs.service("chunked_upload", env=env)
        procs.worker("push", env=env)
        # The stream API signs URLs that point at the edge, as ORIGIN_CDN_BASE_URL does in
        # deployment: the edge starts first, in front of the origin's port.
        origin_port = free_port()
        edge = start_edge(
            procs, f"http://127.0.0.1:{origin_port}", tmp_path / "edge-cache", **env
        ).url
        assert edge is not None
        origin = procs.service(
            "origin", env={**env, "ORIGIN_CDN_BASE_URL": edge}, port=origin_port
        ).url
        try:
            yield Pipeline(
                {**procs.env, **env}, upload.url or "", tus.url or "", origin or "", edge
            )
        finally:
            # The queues go when the block ends: the processes on them first.
            procs.stop_all()


def bucket(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(object keys, keys of multipart uploads in progress) of the pipeline's bucket.

    Read with boto3, the S3 client moto serves, not with the store under test: on S3 a tus
    upload's parts are parts of a multipart upload, which no object listing shows.
    """
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{env['S3_ENDPOINT']}",
        aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=env["S3_SECRET_KEY"],
        region_name=env["S3_REGION"],
    )
    name = env["S3_BUCKET"]
    objects = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name)
        for obj in page.get("Contents", [])
    ]
    uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    return objects, [upload["Key"] for upload in uploads]


def tus_upload(p: Pipeline, media: Path, account: Account) -> str:
    """Upload ``media`` one S3 part per PATCH; the tus parts are in the bucket meanwhile."""
    data = media.read_bytes()
    created = httpx.post(
        f"{p.tus}/files/",
        headers={**TUS, **account.headers, "Upload-Length": str(len(data))},
    )
    assert created.status_code == 201, created.text
    url = str(httpx.URL(f"{p.tus}/files/").join(created.headers["location"]))
    part = int(p.env["CHUNKED_UPLOAD_PART_BYTES"])
    for offset in range(0, len(data), part):
        if offset:
            assert bucket(p.env)[1], "no multipart upload holds the tus parts"
        patched = httpx.patch(
            url,
            headers={**PATCH, **account.headers, "Upload-Offset": str(offset)},
            content=data[offset : offset + part],
            timeout=60,
        )
        assert patched.status_code == 204, patched.text
    return video_id_of(url, account)


def play_through_edge(p: Pipeline, video_id: str, mode: str) -> str:
    """Fetch the master, every variant and every segment through the edge; the master URL."""
    stream = httpx.get(f"{p.origin}/api/stream/{video_id}", params={"mode": mode}).json()
    assert stream["mode"] == mode
    master_url = stream["master_url"]
    assert master_url.startswith(f"{p.edge}/origin/"), master_url
    with httpx.Client(timeout=30) as client:
        master = client.get(master_url)
        assert master.status_code == 200, master.text
        variants = variant_streams(master.text)
        assert len(variants) == len(RENDITIONS) == len(stream["variants"])
        # The variants and the video rungs' I-frame playlists.
        for uri in hls.referenced_uris(master.text):
            variant_url = urljoin(master_url, uri)
            assert variant_url.startswith(p.edge)
            variant = client.get(variant_url)
            assert variant.status_code == 200, variant.text
            # An I-frame playlist names its one file once per byte range.
            segments = list(dict.fromkeys(hls.referenced_uris(variant.text)))
            assert len(segments) > 1 or "#EXT-X-I-FRAMES-ONLY" in variant.text
            for segment in segments:
                fetched = client.get(urljoin(variant_url, segment))
                assert fetched.status_code == 200, (segment, fetched.text)
                assert fetched.content
    return str(master_url)


def test_upload_transcode_play_through_the_edge_and_delete_on_s3(
    pipeline: Pipeline, media_dir: Path, account: Account
) -> None:
    clip = make_clip(media_dir / "s3-1280x720-4s.mp4", seconds=4, size="1280x720")
    # Just over two S3 parts: three PATCHes, the first two leaving parts in the bucket.
    big = padded_media(clip, media_dir / "s3-tus-11m.mp4", 11 * MIB + 4321)
    streamed = stream_upload_file(pipeline.upload, clip, account, title="s3 streamed")
    assert streamed.status_code == 201, streamed.text
    videos = [streamed.json()["id"], tus_upload(pipeline, big, account)]

    for video_id in videos:
        ready = wait_state(pipeline.origin, video_id, {"ready", "failed"}, timeout=180)
        assert ready["state"] == "ready", ready
        assert [r["name"] for r in ready["renditions"]] == RENDITIONS
        keys = [key for key in bucket(pipeline.env)[0] if key.startswith(f"videos/{video_id}/")]
        assert f"videos/{video_id}/source" in keys
        assert any(key.endswith("master.m3u8") for key in keys), keys
        for mode in ("token", "query"):
            master_url = play_through_edge(pipeline, video_id, mode)
            decoded = subprocess.run(
                ["ffmpeg", "-v", "error", "-i", master_url, "-map", "0", "-f", "null", "-"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert decoded.returncode == 0, (mode, decoded.stderr)

    for video_id in videos:
        deleted = httpx.delete(f"{pipeline.origin}/api/videos/{video_id}", headers=account.headers)
        assert deleted.status_code == 204, deleted.text
        gone = httpx.get(f"{pipeline.origin}/api/videos/{video_id}")
        assert gone.status_code == 404
    assert bucket(pipeline.env) == ([], [])
