"""Chaos run: the whole suite under load while its broker, database and cache restart and each
of its processes is killed, one fault after the other; what every fault cost, measured.

The run starts its own `vsp up` (free ports, its own database, queue prefix and run folder, so a
suite already running is not touched; the broker, database and cache it restarts are the
machine's own, shared with everything else on it). Once the demo video plays, Locust viewers
watch it through haproxy and the edges while a streaming and a tus uploader upload a short clip
over and over. After a quiet baseline the faults follow in turn: RabbitMQ, PostgreSQL and Redis
each stopped for --down-seconds and started again; SIGKILL of every service, proxy and worker of
`vsp up` (which restarts it); SIGKILL of the worker running ffmpeg. After each fault the run
waits until every /readyz answers 200 again, keeps the load on for --settle-seconds, and goes
on. Then the load stops, the run waits until every upload has become a video, and counts per
fault (from its start to the next one's): seconds until every /readyz was green again, viewer
requests failed, uploads started / completed / lost, jobs published / done / duplicated / lost.

Goals: every fault recovered within 15 s, no upload or job lost, none done twice, no viewer
request failed unless the fault hit what serves viewers (haproxy, an edge), the whole run under
15 minutes. The exit code is 1 when a goal is missed. A full run rewrites the results section of
docs/RELIABILITY.md; the table also goes to results/chaos.md and results/chaos.json. Whatever
happens (Ctrl-C included) RabbitMQ, PostgreSQL and Redis are left running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from load_tests.chaos import faults, infra, ledger, report
from load_tests.harness import RESULTS
from shared.media.samples import synthetic_clip
from tests.support.infra import database_url, drop_database, drop_topology
from tests.support.paths import ROOT
from tests.support.vsp_up import VspUp, suite_env

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
BUDGET_MINUTES = 15


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = ", ".join(f.name for f in faults.faults())
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="FAULT",
        help=f"apply only these faults, by name or the start of names (kill-edge); of: {names}",
    )
    parser.add_argument("--down-seconds", type=float, default=10, help="outage of each restart")
    parser.add_argument(
        "--settle-seconds", type=float, default=5, help="load kept on after each recovery"
    )
    parser.add_argument("--baseline-seconds", type=float, default=20, help="load before faults")
    parser.add_argument(
        "--ready-timeout", type=float, default=90, help="wait for every /readyz per fault"
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=240, help="wait for every upload to finish"
    )
    parser.add_argument("--viewers", type=int, default=6, help="Locust viewers")
    parser.add_argument("--run-dir", type=Path, help="logs and objects (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder and database")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite RELIABILITY.md")
    return parser.parse_args(argv)


@dataclass
class Suite:
    """The run's `vsp up`, where its services listen, and what the run owns on shared servers."""

    up: VspUp
    env: dict[str, str]
    database: str
    prefix: str

    def url(self, port_setting: str) -> str:
        return f"http://127.0.0.1:{self.env[port_setting]}"


def start_suite(run_dir: Path) -> Suite:
    """`vsp up` on free ports with a database and queues of its own; returns once it plays."""
    tag = f"chaos_{os.getpid()}"
    env = {
        **os.environ,
        **suite_env(),
        "DATABASE_URL": database_url(f"vsp_{tag}"),
        "MQ_PREFIX": tag,
        "STORAGE_ROOT": str(run_dir / "objects"),
        "LOG_LEVEL": "INFO",
        # Viewers keep their signed URLs for the whole run.
        "ORIGIN_PLAYLIST_TTL_SECONDS": "3600",
        "ORIGIN_SEGMENT_TTL_SECONDS": "600",
        # The drill's uploaders upload without pause for the whole run, more than a day's
        # quota of one account; the quotas are proved by tests/e2e/test_quotas.py.
        "QUOTA_UPLOADS_PER_DAY": "0",
        "QUOTA_CONCURRENT_UPLOADS": "0",
    }
    say(f"starting vsp up in {run_dir}")
    up = VspUp.start(env, run_dir)
    return Suite(up, env, f"vsp_{tag}", tag)


def start_load(
    suite: Suite, run_dir: Path, viewers: int, video_id: str, api_key: str
) -> subprocess.Popen[bytes]:
    """Locust, headless, bounded by the run's budget, writing down every request."""
    clip = synthetic_clip(run_dir / "media" / "upload.mp4", seconds=2, size="320x240", rate=15)
    env = {
        **suite.env,
        "PYTHONPATH": str(ROOT),
        "VSP_CHAOS_REQUESTS": str(run_dir / "requests.jsonl"),
        "VSP_CHAOS_VIEWERS": str(viewers),
        "VSP_UPLOAD_FILE": str(clip),
        "VSP_VIDEO_IDS": video_id,
        "VSP_API_KEY": api_key,  # the uploaders act for the demo uploader
        # Players that keep a few seconds ahead, so viewers watch at the pace of playback.
        "VSP_MAX_BUFFER_SECONDS": "4",
        "VSP_RESULTS_DIR": str(run_dir / "results"),
        "VSP_ORIGIN_URL": suite.url("ORIGIN_PORT"),
        "VSP_UPLOAD_URL": suite.url("UPLOAD_PORT"),
        "VSP_TUS_URL": suite.url("CHUNKED_UPLOAD_PORT") + "/files/",
        "VSP_DELIVERY_URL": suite.url("HAPROXY_PORT"),
    }
    users = viewers + 2  # and one uploader of each kind
    with (run_dir / "logs" / "locust.log").open("ab") as log:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
                *("-u", str(users), "-r", str(users), "-t", f"{BUDGET_MINUTES * 60}s"),
                *("--stop-timeout", "10", "--only-summary"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_load(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def ready_after(urls: dict[str, str], timeout: float) -> float | None:
    """Seconds until every URL answers 200 in one sweep; None when that takes over ``timeout``."""
    started = time.monotonic()
    with httpx.Client(timeout=1) as client:
        while time.monotonic() - started < timeout:
            if all(_answers(client, url) for url in urls.values()):
                return time.monotonic() - started
            time.sleep(0.25)
    return None


def _answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def apply_faults(
    suite: Suite,
    plan: list[faults.Fault],
    args: argparse.Namespace,
    deadline: float,
    api_key: str,
) -> list[report.Row]:
    """The baseline, then each fault and its recovery, none started after ``deadline``
    (monotonic); a row per window."""
    run_dir = suite.up.run_dir
    baseline = report.Row("baseline", "the load alone", time.time())
    baseline.ready_seconds = ready_after(suite.up.ready_urls(), args.ready_timeout)
    rows = [baseline]
    time.sleep(args.baseline_seconds)
    for fault in plan:
        row = report.Row(fault.name, fault.what, time.time(), hits_viewers=fault.hits_viewers)
        rows.append(row)
        if time.monotonic() > deadline:
            row.error = "skipped: the run would not end within its budget"
            continue
        say(f"{fault.name}: {fault.what}")
        ctx = faults.Context(
            suite.up, suite.url("UPLOAD_PORT"), api_key, run_dir, args.down_seconds
        )
        try:
            fault.apply(ctx)
        except Exception as exc:  # the run goes on; the row says what went wrong
            row.error = f"{type(exc).__name__}: {exc}"
        row.notes = ctx.notes
        row.ready_seconds = ready_after(suite.up.ready_urls(), args.ready_timeout)
        ready = "never" if row.ready_seconds is None else f"after {row.ready_seconds:.1f} s"
        say(f"{fault.name}: every /readyz green {ready}" + (f"; {row.error}" if row.error else ""))
        time.sleep(args.settle_seconds)
    return rows


def drain(suite: Suite, uploads: list[ledger.Upload], seconds: float) -> int:
    """Wait until every upload's video and every job is ready or failed; how many are not."""
    videos = [u.video_id for u in uploads if u.completed and u.video_id]
    deadline = time.monotonic() + seconds
    while True:
        pending = ledger.pending_videos(suite.env["DATABASE_URL"], videos)
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(2)


def account(suite: Suite, rows: list[report.Row], args: argparse.Namespace) -> list[ledger.Job]:
    """Drain, then count every row's requests, uploads and jobs."""
    run_dir = suite.up.run_dir
    requests = ledger.read_requests(run_dir / "requests.jsonl")
    length = (run_dir / "media" / "upload.mp4").stat().st_size
    uploads = ledger.uploads_of(requests, length)
    ledger.resolve(suite.env["DATABASE_URL"], uploads)
    say(f"waiting (up to {args.drain_seconds:g} s) for every upload to become a video")
    pending = drain(suite, uploads, args.drain_seconds)
    if pending:
        say(f"{pending} video(s) still not ready or failed")
    ledger.settle(suite.env["DATABASE_URL"], uploads)
    logs = [run_dir / "logs" / f"{name}.log" for name in faults.WORKERS]
    jobs = ledger.jobs(suite.env["DATABASE_URL"], logs)
    for row in rows:
        row.count(uploads, jobs)
        row.viewer_failed, row.viewer_requests = ledger.viewer_requests(
            requests, row.start, row.end
        )
    return jobs


def publish(rows: list[report.Row], jobs: list[ledger.Job], minutes: float, full: bool) -> None:
    """Print the table; write it to results/ and, after a full run, to RELIABILITY.md."""
    args = sys.argv[1:]
    command = " ".join(["python -m load_tests.chaos", *args]) if args else "make chaos"
    section = report.render(rows, jobs, command, minutes)
    print("\n".join(["", report.table(rows), "", *report.notes(rows, jobs)]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chaos.md").write_text(section + "\n")
    (RESULTS / "chaos.json").write_text(json.dumps(report.as_json(rows, minutes), indent=2))
    if full:
        report.update_doc(section)
        say(f"updated {report.DOC}")


def clean_up(suite: Suite | None, run_dir: Path, keep: bool) -> None:
    """Leave the machine's infrastructure running and take away what the run made."""
    started = infra.ensure_running()
    if started:
        say(f"started {', '.join(started)} again")
    if suite is None or keep:
        return
    asyncio.run(drop_database(suite.database))
    asyncio.run(infra.delete_queues(suite.prefix))
    asyncio.run(drop_topology(suite.prefix))
    shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse(argv)
    plan = faults.select(faults.faults(), args.only)
    run_dir = (args.run_dir or Path(tempfile.mkdtemp(prefix="vsp-chaos-"))).resolve()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    suite: Suite | None = None
    load: subprocess.Popen[bytes] | None = None
    try:
        suite = start_suite(run_dir)
        video_id = suite.up.wait_line(r"demo video (\S+) is ready", timeout=300)[1]
        api_key = suite.up.wait_line(r"export VSP_API_KEY=(\S+)", timeout=60)[1]
        load = start_load(suite, run_dir, args.viewers, video_id, api_key)
        # The last fault starts early enough for the drain and the accounting to fit.
        deadline = started + BUDGET_MINUTES * 60 - args.drain_seconds - 60
        rows = apply_faults(suite, plan, args, deadline, api_key)
        end = time.time()
        stop_load(load)
        for row, following in zip(rows, [*rows[1:], None], strict=True):
            row.end = following.start if following else end
        jobs = account(suite, rows, args)
        minutes = (time.monotonic() - started) / 60
        say(f"finished in {minutes:.1f} min")
        publish(rows, jobs, minutes, full=not args.only and not args.no_doc)
        missed = [row.fault for row in rows if row.misses()]
        if missed:
            say(f"goals missed by: {', '.join(missed)}")
        if minutes > BUDGET_MINUTES:
            say(f"the run took {minutes:.1f} min, over the {BUDGET_MINUTES} min budget")
        return 1 if missed or minutes > BUDGET_MINUTES else 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if load is not None:
            stop_load(load)
        if suite is not None:
            suite.up.stop(timeout=60)
        clean_up(suite, run_dir, args.keep)
