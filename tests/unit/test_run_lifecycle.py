"""The pure pieces of a re-transcode: the run a master belongs to, how long a job waits."""

from __future__ import annotations

import pytest

from services.transcoder.service import serving_prefix
from shared.mq.topology import Topology


def test_a_master_names_its_runs_folder() -> None:
    assert serving_prefix("videos/v/hls/abc123/master.m3u8") == "videos/v/hls/abc123/"
    # Ladders stored before runs had folders: the whole ladder folder.
    assert serving_prefix("videos/v/hls/master.m3u8") == "videos/v/hls/"


@pytest.mark.parametrize(
    ("delays", "wait", "level"),
    [
        ((2, 8, 32), 60, 3),
        ((2, 8, 32), 31.9, 2),
        ((2, 8, 32), 8, 2),
        ((2, 8, 32), 3, 1),
        ((2, 8, 32), 0.5, 1),  # shorter than every delay: the shortest
        ((1, 1, 1), 4, 1),
        ((30, 5), 10, 2),  # levels need not be in order
        ((30, 5), 2, 2),
    ],
)
def test_a_waiting_job_takes_the_longest_delay_that_does_not_overshoot(
    delays: tuple[int, ...], wait: float, level: int
) -> None:
    assert Topology("p", delays).delay_level(wait) == level
