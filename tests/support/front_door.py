"""The whole platform behind its front door (nginx over HTTPS with HTTP/2 and plain HTTP), on
free ports, as `vsp up` runs it."""

from __future__ import annotations

import ssl
import subprocess
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


def curl(
    method: str, url: str, body: Path, certificate: Path, headers: dict[str, str]
) -> tuple[int, str, str]:
    """``curl --http2`` sends ``body``; the status, the HTTP version and the answer's body.

    curl reads an early answer (nginx refusing a body by its length) while it still sends.
    """
    done = subprocess.run(
        [
            "curl",
            "--http2",
            "--silent",
            "--show-error",
            "--request",
            method,
            "--cacert",
            str(certificate),
            *(arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")),
            "--upload-file",
            str(body),
            "--write-out",
            "\n%{http_code} %{http_version}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer, _, status = done.stdout.rpartition("\n")
    code, version = status.split()
    return int(code), version, answer
