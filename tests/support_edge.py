"""Helpers for the edge tests: real origin, edge and haproxy processes, metrics, signed URLs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.configs.proxies import Backend, HaproxyBalance, render_haproxy
from shared.core.settings import BaseServiceSettings
from shared.core.signing import Signer
from shared.mq.broker import Broker
from shared.mq.messages import VideoEvent
from shared.mq.topology import Topology
from shared.runtime.resources import store_from_settings
from tests.support import VSP, Proc, Processes, free_port, wait_for

ADMIN_TOKEN = "edge-admin-token-for-tests"


def put_object(key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Store an object where the session's origin reads from."""

    async def put() -> None:
        store = store_from_settings(BaseServiceSettings())
        try:
            await store.put_bytes(key, data, content_type)
        finally:
            await store.close()

    asyncio.run(put())


def publish_event(event: VideoEvent) -> None:
    """Publish a video event on the session's exchange, as the transcoder does."""

    async def publish() -> None:
        settings = BaseServiceSettings()
        broker = Broker(
            settings.amqp_url, Topology(settings.mq_prefix, settings.mq_retry_delays_seconds)
        )
        await broker.connect()
        try:
            await broker.publish_event(event)
        finally:
            await broker.close()

    asyncio.run(publish())


def digest(data: bytes) -> str:
    """A short stand-in for bytes in assertions (pytest would diff megabytes otherwise)."""
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()[:16]}"


def signer() -> Signer:
    settings = BaseServiceSettings()
    return Signer(settings.signing_keys, settings.signing_key_id)


def signed(base: str, key: str, ttl: int = 300) -> str:
    """A viewer's query-signed URL of ``key`` through ``base`` (an edge, haproxy or origin)."""
    return signer().signed_url(f"{base}/origin", key, ttl)


def tokened(base: str, key: str, prefix: str, ttl: int = 300) -> str:
    """A viewer's path-token URL of ``key`` through ``base``."""
    return f"{base}/origin/t/{signer().make_token(prefix, ttl)}/{key}"


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` at ``url``/metrics whose labels include ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


PREFETCH_ENDS = ("stored", "not_found", "error")


def prefetches_settled(edge_url: str) -> float:
    """Next-segment prefetches the edge has finished (stored, not found or failed)."""
    return sum(metric(edge_url, "edge_prefetch_total", outcome=o) for o in PREFETCH_ENDS)


def wait_prefetch_settled(edge_url: str, before: float, count: int = 1) -> None:
    """Wait until ``count`` more prefetches than ``before`` have finished.

    A miss on a segment makes the edge fetch the next one in the background, after the viewer
    has the answer. A test that counts the origin's requests waits for that fetch to end, so it
    neither lands among the requests counted next nor in the next test.
    """
    wait_for(
        lambda: prefetches_settled(edge_url) >= before + count,
        timeout=30,
        what="the edge's next-segment prefetch to finish",
    )


def origin_object_gets(origin_url: str, status: str | None = None) -> int:
    """Object GETs the origin itself counted (with ``status``, or any), whatever the URL style."""
    text = httpx.get(f"{origin_url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "http_requests_total"
                and sample.labels.get("method") == "GET"
                and sample.labels.get("route", "").startswith("/origin/")
                and status in (None, sample.labels.get("status"))
            ):
                total += sample.value
    return int(total)


def start_service(
    procs: Processes, name: str, *, env: dict[str, str] | None = None, port: int | None = None
) -> Proc:
    """``vsp serve NAME`` on a free port, patient with a machine busy with other test runs."""
    port = port or free_port()
    proc = procs.start(
        name,
        [*VSP, "serve", name, "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/readyz",
        env=env,
        timeout=120,
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def start_edge(
    procs: Processes, origin_url: str, cache_dir: Path, name: str = "edge-a", **env: str
) -> Proc:
    """``vsp serve edge`` on a free port in front of ``origin_url``."""
    port = free_port()
    settings = {
        "EDGE_ID": name,
        "EDGE_PORT": str(port),
        "EDGE_ORIGIN_URL": origin_url,
        "EDGE_CACHE_DIR": str(cache_dir),
        "EDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        **env,
    }
    return start_service(procs, "edge", env=settings, port=port)


def start_haproxy(
    procs: Processes, work: Path, edges: list[Proc], balance: HaproxyBalance = "consistent"
) -> Proc:
    """haproxy in the foreground with its config in ``work``; ``proc.url`` is its frontend."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    backends = [
        Backend(f"edge{i + 1}", (e.url or "").removeprefix("http://")) for i, e in enumerate(edges)
    ]
    config = work / "haproxy.cfg"
    config.write_text(
        render_haproxy(backends, bind=f"127.0.0.1:{port}", balance=balance, check_interval_ms=300)
    )
    proc = procs.start(
        "haproxy",
        ["haproxy", "-db", "-f", str(config)],
        ready_url=f"http://127.0.0.1:{port}/haproxy/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes in allocated blocks, apparent bytes) of the files under ``root``."""
    blocks = apparent = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                stat = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            blocks += stat.st_blocks * 512
            apparent += stat.st_size
    return blocks, apparent
