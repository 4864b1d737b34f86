"""`vsp up` starts Prometheus on the suite's own ports when it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from services.cli.supervisor import start
from services.cli.up import SuiteSettings, _prometheus_child
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.processes import wait_http


def test_vsp_up_prometheus_scrapes_the_suite_ports(tmp_path: Path) -> None:
    settings = SuiteSettings(
        prometheus_port=free_port(),
        upload_port=free_port(),
        edge_ports=(free_port(), free_port()),
        worker_metrics_port=free_port(),
    )
    (tmp_path / "logs").mkdir()
    child = _prometheus_child(settings, tmp_path)
    assert child is not None
    start(child, dict(os.environ))
    proc = child.proc
    assert proc is not None
    try:
        url = f"http://127.0.0.1:{settings.prometheus_port}"
        wait_http(f"{url}/-/ready", timeout=30)

        def targets() -> list[dict]:
            body = httpx.get(f"{url}/api/v1/targets", timeout=5).json()
            return list(body["data"]["activeTargets"])

        # upload, chunked_upload, origin, two edges, four redirectors, balancer, two workers
        def all_targets() -> list[dict] | None:
            found = targets()
            return found if len(found) == 12 else None

        active = wait_for(all_targets, timeout=60, what="targets")
        addresses = {t["labels"]["instance"] for t in active}
        assert f"127.0.0.1:{settings.upload_port}" in addresses
        assert {f"127.0.0.1:{p}" for p in settings.edge_ports} <= addresses
        assert f"127.0.0.1:{settings.worker_metrics_port + 1}" in addresses
        rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert len(rules) == 3
    finally:
        # Never left running into the next test, however slow it is to stop.
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_without_prometheus_the_suite_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert _prometheus_child(SuiteSettings(), tmp_path) is None
    assert "apt-get install prometheus" in capsys.readouterr().out
