"""The edge against a real origin process: coalescing, verification on hits, Range, purge,
prefetch and warming."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.transcoder import service
from services.transcoder.settings import Settings as TranscoderSettings
from shared.media import hls
from shared.mq.messages import VideoEvent
from shared.runtime.resources import Resources
from tests.support.edge import (
    ADMIN_TOKEN,
    origin_object_gets,
    prefetches_settled,
    start_edge,
    wait_prefetch_settled,
)
from tests.support.hls import variant_streams
from tests.support.media import make_clip
from tests.support.metrics import metric
from tests.support.polling import eventually, logged, wait_for
from tests.support.processes import Proc, Processes
from tests.support.signing import signed, signer_of, tokened
from tests.support.storage import digest, put_object
from tests.support.transcode import queued_video, video_row


@pytest.fixture(scope="module")
def stack(test_env: dict[str, str], test_root: Path) -> Iterator[dict[str, Proc]]:
    """One origin and one edge (warming on video.ready) shared by this module's tests."""
    procs = Processes(test_root / "logs" / "edge-integration", test_env)
    try:
        origin = procs.service("origin", env={"FAULT_ADMIN_TOKEN": ADMIN_TOKEN})
        edge = start_edge(
            procs,
            origin.url or "",
            test_root / "edge-integration-cache",
            EDGE_WARM_ON_READY="true",
        )
        yield {"origin": origin, "edge": edge}
    finally:
        procs.stop_all()


def new_prefix() -> str:
    return f"videos/{uuid.uuid4()}/hls/"


async def fetch_together(edge: str, url: str, viewers: int) -> list[httpx.Response]:
    """``viewers`` GETs of ``url`` sent at once, each on its own already open connection."""
    limits = httpx.Limits(max_connections=viewers, max_keepalive_connections=viewers)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(client.get(f"{edge}/healthz") for _ in range(viewers)))
        return await asyncio.gather(*(client.get(url) for _ in range(viewers)))


def set_origin_delay(origin: str, seconds: float) -> None:
    """Slow every origin answer, so a fetch is still running when the other viewers ask."""
    response = httpx.put(
        f"{origin}/admin/fault",
        json={"delay_seconds": seconds},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    response.raise_for_status()


def test_200_concurrent_misses_make_one_origin_fetch(stack: dict[str, Proc]) -> None:
    origin, edge = stack["origin"].url or "", stack["edge"].url or ""
    key = new_prefix() + "360p/seg_00003.m4s"
    data = os.urandom(3 * 1024 * 1024)
    put_object(key, data, "video/iso.segment")
    # Only successful reads count: the miss also prefetches seg_00004, which the origin lacks.
    before = origin_object_gets(origin, "200")
    prefetched = prefetches_settled(edge)
    set_origin_delay(origin, 2.0)
    try:
        responses = asyncio.run(fetch_together(edge, signed(edge, key), 200))
    finally:
        set_origin_delay(origin, 0)
    # That prefetch starts as the fill ends and meets the delay too: let it end here, not
    # among the origin requests the next test counts.
    wait_prefetch_settled(edge, prefetched)
    after = origin_object_gets(origin, "200")
    assert [r.status_code for r in responses] == [200] * 200
    assert after - before == 1
    assert all(r.content == data for r in responses), "some viewer got other bytes"
    results = Counter(r.headers["x-cache"] for r in responses)
    assert results["MISS"] == 1, results
    assert results["COALESCED"] >= 1, results
    assert set(results) <= {"MISS", "COALESCED", "HIT"}, results
    assert {r.headers["x-edge-id"] for r in responses} == {"edge-a"}


def test_hits_need_a_valid_token_or_signature(stack: dict[str, Proc]) -> None:
    origin, edge = stack["origin"].url or "", stack["edge"].url or ""
    prefix = new_prefix()
    key = prefix + "360p/seg_00001.m4s"
    data = os.urandom(64 * 1024)
    put_object(key, data, "video/iso.segment")
    prefetched = prefetches_settled(edge)
    first = httpx.get(signed(edge, key))
    assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
    # A path token hits the same cache entry: neither token nor signature is in the key.
    hit = httpx.get(tokened(edge, key, prefix))
    assert (hit.status_code, hit.headers["x-cache"], digest(hit.content)) == (
        200,
        "HIT",
        digest(data),
    )
    # The miss made the edge prefetch seg_00002 in the background; once that request has
    # reached the origin, nothing but a refused request could add to the count.
    wait_prefetch_settled(edge, prefetched)
    fetches = origin_object_gets(origin)

    s = signer_of()
    good = s.sign(key, 300)
    expired = s.sign(key, -10)
    other_video = new_prefix()
    refused = {
        "forged signature": f"{edge}/origin/{key}?exp={good.exp}&sig={'0' * 64}&kid={good.kid}",
        "expired signature": f"{edge}/origin/{key}?{expired.query()}",
        "signature of another object": signed(edge, prefix + "360p/seg_00002.m4s").replace(
            "seg_00002", "seg_00001"
        ),
        "exp moved forward": f"{edge}/origin/{key}?exp={good.exp + 60}&sig={good.sig}",
        "unknown key id": f"{edge}/origin/{key}?exp={good.exp}&sig={good.sig}&kid=nope",
        "no signature": f"{edge}/origin/{key}",
        "forged token": f"{edge}/origin/t/k1.{good.exp}.{'f' * 64}/{key}",
        "expired token": tokened(edge, key, prefix, ttl=-10),
        "token of another video": tokened(edge, key, other_video),
        "malformed token": f"{edge}/origin/t/garbage/{key}",
    }
    for case, url in refused.items():
        for method in ("GET", "HEAD"):
            response = httpx.request(method, url)
            assert response.status_code == 403, (case, method, response.status_code)
            assert data[:64] not in response.content, case
            if method == "GET":
                body = response.json()
                assert body["error"] == "forbidden", (case, body)
                assert body["detail"], case
    assert origin_object_gets(origin) == fetches
    assert metric(edge, "edge_requests_total", result="denied") >= 2 * len(refused)
    again = httpx.get(signed(edge, key))
    assert (again.headers["x-cache"], digest(again.content)) == ("HIT", digest(data))


def test_a_url_that_served_hits_is_refused_once_it_expires(stack: dict[str, Proc]) -> None:
    edge = stack["edge"].url or ""
    prefix = new_prefix()
    key = prefix + "360p/seg_00001.m4s"
    data = os.urandom(32 * 1024)
    put_object(key, data, "video/iso.segment")
    s = signer_of()
    # Long enough for the requests below on a busy machine; the test then waits the rest out.
    signature, token = s.sign(key, 5), s.make_token(prefix, 5)
    short = {
        "signature": f"{edge}/origin/{key}?{signature.query()}",
        "token": f"{edge}/origin/t/{token}/{key}",
    }
    expires = max(signature.exp, int(token.split(".")[1]))
    # The edge remembers credentials it verified; repeating a URL must not outlive its expiry.
    for url in short.values():
        for _ in range(3):
            response = httpx.get(url)
            assert response.status_code == 200 and digest(response.content) == digest(data)
    assert httpx.get(short["signature"]).headers["x-cache"] == "HIT"
    # Both expire once the clock's whole seconds pass ``exp``.
    time.sleep(max(0.0, expires + 1 - time.time()) + 0.1)
    for case, url in short.items():
        for method in ("GET", "HEAD"):
            refused = httpx.request(method, url)
            assert refused.status_code == 403, (case, method)
            assert data[:64] not in refused.content, case
        assert "expired" in httpx.get(url).json()["detail"], case


def test_range_head_and_conditional_requests(stack: dict[str, Proc]) -> None:
    edge = stack["edge"].url or ""
    key = new_prefix() + "720p/seg_00010.m4s"
    data = os.urandom(300_000)
    put_object(key, data, "video/iso.segment")
    url = signed(edge, key)
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))
    etag = head.headers["etag"]

    part = httpx.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and digest(part.content) == digest(data[1000:2000])
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert part.headers["x-cache"] == "HIT"
    tail = httpx.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and digest(tail.content) == digest(data[-500:])
    outside = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert outside.status_code == 416
    assert outside.json()["error"] == "range_not_satisfiable"
    assert outside.headers["content-range"] == f"bytes */{len(data)}"

    cached = httpx.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    modified = httpx.get(url, headers={"If-Modified-Since": head.headers["last-modified"]})
    assert modified.status_code == 304
    assert int(httpx.get(url).headers["age"]) >= 0

    bad = httpx.get(f"{edge}/origin/videos/../secret?exp=1&sig=x")
    assert bad.status_code in (400, 403, 404)
    post = httpx.post(url)
    assert post.status_code == 405 and post.json()["error"] == "method_not_allowed"
    missing = httpx.get(signed(edge, new_prefix() + "nope.m4s"))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_purge_by_path_and_prefix(stack: dict[str, Proc]) -> None:
    edge = stack["edge"].url or ""
    prefix = new_prefix()
    keys = [prefix + f"360p/init{i}.mp4" for i in range(3)]
    for key in keys:
        put_object(key, os.urandom(1000), "video/mp4")
        httpx.get(signed(edge, key)).raise_for_status()
        assert httpx.get(signed(edge, key)).headers["x-cache"] == "HIT"
    refused = httpx.post(f"{edge}/admin/purge", json={"paths": [keys[0]]})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    empty = httpx.post(f"{edge}/admin/purge", json={}, headers=auth)
    assert empty.status_code == 400 and empty.json()["error"] == "bad_request"
    one = httpx.post(f"{edge}/admin/purge", json={"paths": [keys[0]]}, headers=auth)
    assert one.json() == {"purged": 1}
    assert httpx.get(signed(edge, keys[0])).headers["x-cache"] == "MISS"
    assert httpx.get(signed(edge, keys[1])).headers["x-cache"] == "HIT"
    rest = httpx.post(f"{edge}/admin/purge", json={"prefixes": [prefix]}, headers=auth)
    assert rest.json() == {"purged": 3}
    assert {httpx.get(signed(edge, k)).headers["x-cache"] for k in keys} == {"MISS"}


def test_segment_miss_prefetches_the_next(stack: dict[str, Proc]) -> None:
    edge = stack["edge"].url or ""
    prefix = new_prefix()
    first, second = prefix + "480p/seg_00007.m4s", prefix + "480p/seg_00008.m4s"
    for key in (first, second):
        put_object(key, os.urandom(50_000), "video/iso.segment")
    stored = metric(edge, "edge_prefetch_total", outcome="stored")
    used = metric(edge, "edge_prefetch_used_total")
    assert httpx.get(signed(edge, first)).headers["x-cache"] == "MISS"
    wait_for(
        lambda: metric(edge, "edge_prefetch_total", outcome="stored") > stored,
        timeout=10,
        what="prefetch of the next segment",
    )
    assert httpx.get(signed(edge, second)).headers["x-cache"] == "HIT"
    assert metric(edge, "edge_prefetch_used_total") == used + 1


async def test_video_ready_warms_the_first_segments_of_a_real_ladder(
    stack: dict[str, Proc], res: Resources, media_dir: Path
) -> None:
    edge = stack["edge"]
    base = edge.url or ""
    await logged(edge, "video events: listening")
    # An event from a transcoder that did not name the master yet is logged and skipped.
    old = VideoEvent(type="video.ready", video_id=uuid.uuid4(), state="ready")
    await res.need_broker().publish_event(old)
    await logged(edge, f"video.ready for {old.video_id} names no master playlist")

    # 10 s in 4 s segments: three per variant, of which the edge warms the first two.
    clip = make_clip(media_dir / "warm-640x360-10s.mp4", seconds=10, size="640x360")
    job = await queued_video(res, clip)
    stored = metric(base, "edge_warm_objects_total", outcome="stored")
    used = metric(base, "edge_warm_used_total")
    await service.transcode(res, TranscoderSettings(), job)
    master_key = (await video_row(res, job.video_id)).master_key
    assert master_key is not None
    prefix = master_key.rsplit("/", 1)[0] + "/"

    async def warmed() -> bool:
        return metric(base, "edge_warm_objects_total", outcome="stored") >= stored + 6

    # Two variants (360p, 240p), each an init segment and two media segments.
    await eventually(warmed, within=20, what="warming on video.ready")

    # The first viewer: master, variant playlists, then each variant's first segments.
    results: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=30) as client:

        async def get(key: str) -> httpx.Response:
            response = await client.get(tokened(base, key, prefix))
            assert response.status_code == 200, (key, response.text)
            return response

        master = (await get(master_key)).text
        variants = [hls.resolve(master_key, uri) for _, uri in variant_streams(master)]
        assert [v.rsplit("/", 2)[1] for v in variants] == ["360p", "240p"]
        later = []
        for variant_key in variants:
            playlist = (await get(variant_key)).text
            init, *segments = [hls.resolve(variant_key, u) for u in hls.referenced_uris(playlist)]
            assert len(segments) == 3
            for key in [init, *segments[:2]]:
                results[key] = (await get(key)).headers["x-cache"]
            later.append(segments[2])
        assert set(results.values()) == {"HIT"}, results
        assert metric(base, "edge_warm_used_total") == used + 6
        for key in later:
            assert (await get(key)).headers["x-cache"] == "MISS"
        # The descriptions beside the ladder are delivered like its segments.
        loudness = (await get(prefix + "loudness.json")).json()
        assert loudness["has_audio"] is True and loudness["integrated_lufs"] < 0
        assert (await get(prefix + "tech_meta.json")).json()["video"]["width"] == 640
