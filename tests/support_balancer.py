"""Helpers for the balancer tests: origin backends, balancer processes, signed objects, load."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from shared.core.settings import BaseServiceSettings
from shared.core.signing import Signer
from shared.storage.base import ObjectStore
from tests.support import VSP, Proc, Processes, free_port, wait_http

ADMIN_TOKEN = "balancer-test-admin-token"


def signer() -> Signer:
    settings = BaseServiceSettings()
    return Signer(settings.signing_keys, settings.signing_key_id)


def signed_path(key: str, ttl_seconds: int = 3600) -> str:
    """``/origin/<key>?exp=..&sig=..`` for any host in front of an origin."""
    return f"/origin/{key}?{signer().sign(key, ttl_seconds).query()}"


async def put_object(store: ObjectStore, key: str, size: int) -> bytes:
    """Store ``size`` random bytes under ``key`` and return them."""
    data = os.urandom(size)
    await store.put_bytes(key, data, "video/iso.segment")
    return data


def start_all(
    procs: Processes, specs: Sequence[tuple[str, list[str], str, dict[str, str]]]
) -> list[Proc]:
    """Start several processes at once, then wait for each to answer its ready URL."""
    started = [procs.start(name, args, env=env) for name, args, _, env in specs]
    for proc, (_, _, ready, _) in zip(started, specs, strict=True):
        wait_http(ready, timeout=60, proc=proc)
    return started


def origin_spec(
    port: int, extra: dict[str, str] | None = None
) -> tuple[str, list[str], str, dict[str, str]]:
    env = {"FAULT_ADMIN_TOKEN": ADMIN_TOKEN, **(extra or {})}
    return (
        "origin",
        [*VSP, "serve", "origin", "--port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
        env,
    )


def balancer_spec(
    port: int, backends: dict[str, str], **knobs: object
) -> tuple[str, list[str], str, dict[str, str]]:
    env = {"BALANCER_BACKENDS": json.dumps([{"url": u, "name": n} for n, u in backends.items()])}
    env.update({f"BALANCER_{k.upper()}": str(v) for k, v in knobs.items()})
    return (
        "balancer",
        [*VSP, "serve", "balancer", "--port", str(port)],
        f"http://127.0.0.1:{port}/readyz",
        env,
    )


@dataclass
class Cluster:
    backends: dict[str, str]
    balancers: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)


def start_cluster(
    procs: Processes, n_backends: int, balancers: dict[str, dict[str, object]]
) -> Cluster:
    """``n_backends`` origins (b0, b1, ...) and one balancer per entry, all over those origins."""
    ports = {f"b{i}": free_port() for i in range(n_backends)}
    backends = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    balancer_ports = {name: free_port() for name in balancers}
    specs = [origin_spec(port) for port in ports.values()]
    specs += [
        balancer_spec(balancer_ports[name], backends, **knobs) for name, knobs in balancers.items()
    ]
    started = start_all(procs, specs)
    cluster = Cluster(
        backends,
        {name: f"http://127.0.0.1:{port}" for name, port in balancer_ports.items()},
    )
    for name, proc in zip([*ports, *balancers], started, strict=True):
        cluster.procs[name] = proc
    return cluster


def set_delay(backend_url: str, seconds: float) -> None:
    response = httpx.put(
        f"{backend_url}/admin/fault",
        json={"delay_seconds": seconds},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()


def stats(balancer_url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{balancer_url}/api/stats", timeout=10).json()  # type: ignore[no-any-return]


def backend_row(balancer_url: str, name: str) -> dict:  # type: ignore[type-arg]
    return next(b for b in stats(balancer_url)["backends"] if b["name"] == name)


@dataclass
class Outcome:
    started: float
    finished: float
    backend: str | None
    status: int | None
    ok: bool
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class Load:
    """Closed-loop viewers: each worker fetches ``path`` again as soon as it has the whole body."""

    def __init__(self, base_url: str, path: str, expected: bytes, workers: int) -> None:
        self.base_url = base_url
        self.path = path
        self.expected = expected
        self.workers = workers
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=20, limits=limits) as client:
            while not self._stop.is_set():
                self.outcomes.append(await self._one(client))

    async def _one(self, client: httpx.AsyncClient) -> Outcome:
        started = time.monotonic()
        backend = status = None
        try:
            async with client.stream("GET", self.path) as response:
                backend = response.headers.get("x-backend")
                status = response.status_code
                body = await response.aread()
            ok = status == 200 and body == self.expected
            error = None if ok else f"status {status}, {len(body)} bytes"
        except httpx.HTTPError as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        return Outcome(started, time.monotonic(), backend, status, ok, error)

    def between(self, start: float, end: float) -> list[Outcome]:
        """Requests that started in ``[start, end)``."""
        return [o for o in self.outcomes if start <= o.started < end]


def share(outcomes: Sequence[Outcome], backend: str) -> float:
    return sum(1 for o in outcomes if o.backend == backend) / max(1, len(outcomes))


def p95(outcomes: Sequence[Outcome]) -> float:
    ordered = sorted(o.seconds for o in outcomes)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
