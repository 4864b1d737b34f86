"""The balancer's tests: origin backends taking fault injection, balancers over them, and
closed-loop viewers measuring what passes through."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from tests.support.processes import Proc, Processes

ADMIN_TOKEN = "balancer-test-admin-token"


def start_backend(procs: Processes, port: int | None = None, *, wait: bool = True) -> Proc:
    """``vsp serve origin`` on ``port`` (or a free one), taking fault injection."""
    return procs.service("origin", port=port, env={"FAULT_ADMIN_TOKEN": ADMIN_TOKEN}, wait=wait)


def start_balancer(
    procs: Processes,
    backends: dict[str, str],
    *,
    port: int | None = None,
    wait: bool = True,
    **knobs: object,
) -> Proc:
    """``vsp serve balancer`` over ``backends`` (name -> URL); ``knobs`` are its settings
    (``strategy="round_robin"`` sets ``BALANCER_STRATEGY``)."""
    env = {"BALANCER_BACKENDS": json.dumps([{"url": u, "name": n} for n, u in backends.items()])}
    env.update({f"BALANCER_{k.upper()}": str(v) for k, v in knobs.items()})
    return procs.service("balancer", port=port, env=env, wait=wait)


@dataclass
class Cluster:
    backends: dict[str, str]
    balancers: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)


def start_cluster(
    procs: Processes, n_backends: int, balancers: dict[str, dict[str, object]]
) -> Cluster:
    """``n_backends`` origins (b0, b1, ...) and one balancer per entry, all over those origins."""
    started = {f"b{i}": start_backend(procs, wait=False) for i in range(n_backends)}
    backends = {name: proc.url for name, proc in started.items()}
    for name, knobs in balancers.items():
        started[name] = start_balancer(procs, backends, wait=False, **knobs)
    procs.wait_ready(started.values(), timeout=60)
    cluster = Cluster(backends, {name: started[name].url for name in balancers})
    cluster.procs.update(started)
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
