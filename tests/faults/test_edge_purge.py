"""A video deleted while RabbitMQ is away: the delete says so (503) and, repeated once the
broker is back, purges the video from the edge, whose consumer came back with the broker.

The origin and the edge use a RabbitMQ node of their own (``PrivateRabbit``), so that stopping it
disturbs no other test run on the machine.
"""

from __future__ import annotations

from pathlib import Path

from shared.runtime.resources import Resources
from tests.support.edge import cached_files, delete_video, media_keys, play, start_edge
from tests.support.infra import PrivateRabbit
from tests.support.media import make_ladder
from tests.support.origin import seed_video
from tests.support.polling import eventually
from tests.support.processes import Processes, wait_http

ADMIN_TOKEN = "purge-admin-token-for-tests"


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
        # Both are ready once their connections, and the edge's consumer, are back.
        for proc in (origin, edge):
            wait_http(f"{proc.url}/readyz", timeout=60, proc=proc)
        deleted = await delete_video(origin, video, ADMIN_TOKEN)
        assert deleted.status_code == 204, deleted.text

        async def purged() -> bool:
            return not cached_files(cache, keys)

        await eventually(purged, within=15, what="the edge to purge the deleted video")
    finally:
        procs.stop_all()
        rabbit.destroy()
