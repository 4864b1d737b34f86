"""The faults, in the order a run applies them, and how each is applied.

A fault's ``apply`` returns once the fault is over: the broker, database or cache is started
again, or the process is dead. What the suite does from then on is the recovery being measured.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psutil

from load_tests.chaos import infra
from services.cli.client import ClientError, stream_upload
from services.cli.credentials import auth_headers
from shared.media.samples import synthetic_clip
from tests.support.polling import wait_for
from tests.support.vsp_up import VspUp

# The processes of `vsp up` killed one after the other. Viewers fetch through haproxy and the
# edges, so only those faults may fail viewer requests (the balancer and nginx serve other
# clients; the origin is behind the edges' caches).
KILLED = (
    "upload",
    "chunked_upload",
    "origin",
    "balancer",
    "edge-1",
    "edge-2",
    "haproxy",
    "redirector-1",
    "redirector-2",
    "redirector-3",
    "redirector-4",
    "nginx",
    "worker-push",
    "worker-pull",
)
VIEWER_PATH = frozenset({"edge-1", "edge-2", "haproxy"})
WORKERS = ("worker-push", "worker-pull")


@dataclass
class Context:
    """What applying a fault needs: the suite, its upload URL and the uploader's API key, how
    long outages last."""

    suite: VspUp
    upload_url: str
    api_key: str
    run_dir: Path
    down_seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    apply: Callable[[Context], None]
    hits_viewers: bool = False


def _outage(stop: Callable[[], None], start: Callable[[], None]) -> Callable[[Context], None]:
    def apply(ctx: Context) -> None:
        stop()
        try:
            time.sleep(ctx.down_seconds)
        finally:
            start()

    return apply


def kill(ctx: Context, name: str) -> None:
    """SIGKILL a child of ``vsp up`` with every process it forked, as a crash would."""
    pid = ctx.suite.pids().get(name)
    if pid is None:
        raise LookupError(f"vsp up runs no {name}")
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: _dead(pid), timeout=10, what=f"{name} (pid {pid}) to die")


def _dead(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return bool(status == psutil.STATUS_ZOMBIE)


def _encoding_worker(ctx: Context) -> str | None:
    """The worker running ffmpeg now, if one is."""
    pids = ctx.suite.pids()
    for name in WORKERS:
        try:
            family = psutil.Process(pids[name]).children(recursive=True)
        except (KeyError, psutil.NoSuchProcess):
            continue
        if any("ffmpeg" in p.name() for p in family if p.is_running()):
            return name
    return None


def kill_mid_job(ctx: Context) -> None:
    """Upload a clip long enough to keep a worker busy, then kill the worker encoding."""
    clip = synthetic_clip(ctx.run_dir / "media" / "mid-job.mp4", seconds=30, size="640x360")
    try:
        video = stream_upload(
            ctx.upload_url, clip, title="chaos mid-job", headers=auth_headers(ctx.api_key)
        )
    except ClientError as exc:  # a SystemExit, for the command line: not here
        raise RuntimeError(str(exc)) from None
    worker = wait_for(lambda: _encoding_worker(ctx), timeout=120, what="a worker to run ffmpeg")
    kill(ctx, worker)
    ctx.notes.append(
        f"uploaded video {video['id']} to keep a worker busy; killed {worker} while it ran ffmpeg"
    )


def faults() -> list[Fault]:
    """Every fault of a full run, in order."""
    down = "stopped for --down-seconds, then started"
    plan = [
        Fault(
            "restart-rabbitmq",
            f"RabbitMQ: `rabbitmqctl stop_app`, {down}",
            _outage(infra.stop_rabbitmq, infra.start_rabbitmq),
        ),
        Fault(
            "restart-postgresql",
            f"PostgreSQL: `pg_ctlcluster ... stop`, {down}",
            _outage(infra.stop_postgresql, infra.start_postgresql),
        ),
        Fault(
            "restart-redis",
            f"Redis: `SHUTDOWN NOSAVE`, {down} as `vsp up` says",
            _outage(infra.stop_redis, infra.start_redis),
        ),
    ]
    plan += [
        Fault(
            f"kill-{name}",
            f"SIGKILL of {name} and what it forked",
            partial(kill, name=name),
            hits_viewers=name in VIEWER_PATH,
        )
        for name in KILLED
    ]
    plan.append(
        Fault(
            "kill-worker-mid-job",
            "SIGKILL of the worker running ffmpeg",
            kill_mid_job,
        )
    )
    return plan


def select(plan: list[Fault], only: list[str] | None) -> list[Fault]:
    """The faults named in ``only`` (a name or the start of names, e.g. ``kill-edge``)."""
    if not only:
        return plan
    unknown = [o for o in only if not any(f.name.startswith(o) for f in plan)]
    if unknown:
        names = ", ".join(f.name for f in plan)
        raise SystemExit(f"no fault named {', '.join(unknown)}; choose from {names}")
    return [f for f in plan if any(f.name.startswith(o) for o in only)]
