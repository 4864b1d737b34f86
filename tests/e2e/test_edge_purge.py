"""Deleting a video purges it from every edge, also from one that was away at the time."""

from __future__ import annotations

from pathlib import Path

import httpx

from shared.runtime.resources import Resources
from tests.support.edge import cached_files, delete_video, media_keys, play, start_edge
from tests.support.media import make_ladder
from tests.support.origin import seed_video
from tests.support.polling import eventually
from tests.support.processes import Processes
from tests.support.signing import tokened

ADMIN_TOKEN = "purge-admin-token-for-tests"
# No next-segment prefetch: a background fill still running at the delete could not be told
# apart from a purge that missed an object.
EDGE_ENV = {"EDGE_PREFETCH_NEXT_SEGMENT": "false"}


async def test_deleting_a_video_purges_it_from_every_edge(
    procs: Processes, res: Resources, media_dir: Path, test_root: Path
) -> None:
    origin = procs.service("origin", env={"ORIGIN_ADMIN_TOKEN": ADMIN_TOKEN})
    folders = {name: test_root / f"purge-cache-{name}" for name in ("edge-a", "edge-b")}
    edges = {
        name: start_edge(procs, origin.url, folder, name=name, **EDGE_ENV)
        for name, folder in folders.items()
    }
    ladder = make_ladder(media_dir, seconds=8)
    doomed = await seed_video(res, ladder, title="doomed", seconds=8)
    neighbour = await seed_video(res, ladder, title="neighbour", seconds=8)
    keys = media_keys(doomed)
    for edge in edges.values():
        for video in (doomed, neighbour):
            assert await play(edge, video) == {"MISS"}
            assert await play(edge, video) == {"HIT"}
    for folder in folders.values():
        assert cached_files(folder, keys) == keys

    # edge-b is away (restarting, say) while the video is deleted.
    edges["edge-b"].stop()
    deleted = await delete_video(origin, doomed, ADMIN_TOKEN)
    assert deleted.status_code == 204, deleted.text
    edges["edge-b"] = start_edge(procs, origin.url, folders["edge-b"], name="edge-b", **EDGE_ENV)

    for name, edge in edges.items():

        async def purged(folder: Path = folders[name]) -> bool:
            return not cached_files(folder, keys)

        await eventually(purged, within=15, what=f"{name} to purge the deleted video")
        async with httpx.AsyncClient(timeout=30) as client:
            for key in keys:
                response = await client.get(tokened(edge.url, key, doomed.prefix + "hls/"))
                assert response.status_code == 404, (name, key, response.headers)
        # Nothing else went with it.
        assert await play(edge, neighbour) == {"HIT"}
