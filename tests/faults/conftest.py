"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.infra import private_queues


@pytest.fixture(scope="module")
def queues(request: pytest.FixtureRequest, test_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """No worker runs in a tus fault test: its jobs go to queues of the module's own."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    with private_queues(name) as env:
        yield env
