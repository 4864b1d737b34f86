"""A video deleted while RabbitMQ is away: the delete says so (503) and, repeated once the
broker is back, purges the video from the edge, whose consumer came back with the broker. An
edge started while RabbitMQ is away serves viewers all the same and purges once it is back.

The origin and the edge use a RabbitMQ node of their own (``PrivateRabbit``), so that stopping it
disturbs no other test run on the machine.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from shared.runtime.resources import Resources
from tests.support.edge import cached_files, delete_video, media_keys, play, start_edge
from tests.support.infra import PrivateRabbit
from tests.support.media import make_ladder
from tests.support.origin import SeededVideo, seed_video
from tests.support.polling import eventually, logged
from tests.support.processes import Proc, Processes, wait_http

ADMIN_TOKEN = "purge-admin-token-for-tests"


async def deleted_and_purged(
    origin: Proc, video: SeededVideo, cache: Path, keys: list[str]
) -> None:
    """Delete ``video`` at the origin (204) and wait until the edge's cache holds none of it."""
    deleted = await delete_video(origin, video, ADMIN_TOKEN)
    assert deleted.status_code == 204, deleted.text

    async def purged() -> bool:
        return not cached_files(cache, keys)

    await eventually(purged, within=15, what="the edge to purge the deleted video")


async def test_a_delete_during_a_broker_outage_is_refused_then_purges_the_edge(
    procs: Processes, res: Resources, media_dir: Path, test_root: Path
) -> None:
    rabbit = PrivateRabbit.create()
    try:
        broker = {"AMQP_URL": rabbit.url}
        origin = procs.service("origin", env={**broker, "ORIGIN_ADMIN_TOKEN": ADMIN_TOKEN})
        cache = test_root / "purge-restart-cache"
        edge = start_edge(
            procs, origin.url, cache, name="edge-r", EDGE_PREFETCH_NEXT_SEGMENT="false", **broker
        )
        video = await seed_video(res, make_ladder(media_dir, seconds=8), seconds=8)
        keys = media_keys(video)
        assert await play(edge, video) == {"MISS"}
        assert cached_files(cache, keys) == keys

        rabbit.stop_app()
        refused = await delete_video(origin, video, ADMIN_TOKEN)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "service_unavailable"
        assert int(refused.headers["retry-after"]) >= 0
        # The objects are gone and the row stays marked, so the video plays nowhere else...
        assert await res.need_store().list(video.prefix) == []
        # ...but the edge, never told, still holds its copies.
        assert cached_files(cache, keys) == keys

        rabbit.start_app()
        wait_http(f"{origin.url}/readyz", timeout=60, proc=origin)
        await deleted_and_purged(origin, video, cache, keys)
    finally:
        procs.stop_all()
        rabbit.destroy()


async def test_an_edge_started_while_the_broker_is_down_serves_and_purges_once_it_is_back(
    procs: Processes, res: Resources, media_dir: Path, test_root: Path
) -> None:
    rabbit = PrivateRabbit.create()
    try:
        broker = {"AMQP_URL": rabbit.url}
        origin = procs.service("origin", env={**broker, "ORIGIN_ADMIN_TOKEN": ADMIN_TOKEN})
        rabbit.stop_app()
        cache = test_root / "edge-without-broker-cache"
        edge = start_edge(
            procs, origin.url, cache, name="edge-nb", EDGE_PREFETCH_NEXT_SEGMENT="false", **broker
        )
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{edge.url}/readyz")).status_code == 200
        video = await seed_video(res, make_ladder(media_dir, seconds=8), seconds=8)
        keys = media_keys(video)
        assert await play(edge, video) == {"MISS"}
        assert await play(edge, video) == {"HIT"}
        assert "the broker is unreachable" in edge.log()

        rabbit.start_app()
        wait_http(f"{origin.url}/readyz", timeout=60, proc=origin)
        await logged(edge, "video events: listening", within=60)
        await deleted_and_purged(origin, video, cache, keys)
    finally:
        procs.stop_all()
        rabbit.destroy()
