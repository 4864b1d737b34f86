"""The whole platform behind its front door (nginx over HTTPS with HTTP/2 and plain HTTP), on
free ports, as `vsp up` runs it."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import Processes
from tests.support.proxies import Front, start_front_door
from tests.support.suite import Suite, start_suite


@dataclass(frozen=True)
class Platform:
    """Every service and worker of the suite, and the front door in front of them."""

    suite: Suite
    front: Front

    def client(self, **options: Any) -> httpx.Client:
        """An h2-capable client trusting the front door's certificate."""
        trust = ssl.create_default_context(cafile=self.front.certificate)
        return httpx.Client(http2=True, verify=trust, timeout=30, **options)


def start_platform(procs: Processes, work: Path) -> Platform:
    """The suite and its front door, with their files in ``work``; ``procs`` stops them."""
    suite = start_suite(procs, work)
    urls = suite.urls
    front = start_front_door(
        procs,
        work / "nginx",
        origin=urls["origin"][0],
        upload=urls["upload"][0],
        chunked_upload=urls["chunked_upload"][0],
        balancer=urls["balancer"][0],
        redirectors=urls["redirector"],
    )
    return Platform(suite, front)
