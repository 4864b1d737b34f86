"""Every nginx.conf and haproxy.cfg a deployment carries passes `nginx -t` and `haproxy -c`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services.cli.up import local_certificate
from tests.support.paths import ROOT

NGINX = [ROOT / "nginx.conf", ROOT / "deploy" / "k8s" / "proxies" / "nginx.conf"]
HAPROXY = [
    ROOT / "haproxy.cfg",
    ROOT / "deploy" / "compose" / "haproxy.cfg",
    ROOT / "deploy" / "k8s" / "proxies" / "haproxy.cfg",
]
# Container and cluster names do not resolve here; both tools refuse unresolvable upstreams, so
# they are checked at loopback with the same ports.
UPSTREAM = re.compile(r"\b(?!127\.0\.0\.1\b|0\.0\.0\.0\b)([a-z][a-z0-9.-]*):(\d{2,5})\b")


def at_loopback(text: str) -> str:
    return UPSTREAM.sub(r"127.0.0.1:\2", text)


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", NGINX, ids=ids(NGINX))
def test_nginx_t(path: Path, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    # The certificate a deployment mounts, made here.
    cert, key = local_certificate(tmp_path)
    text = at_loopback(path.read_text())
    text = text.replace("/etc/nginx/tls/tls.crt", str(cert)).replace(
        "/etc/nginx/tls/tls.key", str(key)
    )
    conf.write_text(text)
    checked = subprocess.run(
        [
            shutil.which("nginx") or "/usr/sbin/nginx",
            "-t",
            "-q",
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "error.log"),
            "-c",
            str(conf),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("path", HAPROXY, ids=ids(HAPROXY))
def test_haproxy_c(path: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(at_loopback(path.read_text()))
    checked = subprocess.run(
        [shutil.which("haproxy") or "/usr/sbin/haproxy", "-c", "-f", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Configuration file is valid" in checked.stdout + checked.stderr


def test_the_checks_reject_broken_configs(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(at_loopback(HAPROXY[0].read_text()).replace("balance hash", "balance hsah"))
    assert subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True).returncode != 0
    conf = tmp_path / "nginx.conf"
    conf.write_text(at_loopback(NGINX[0].read_text()).replace("keepalive 64;", "keepalive;"))
    broken = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c", str(conf)],
        capture_output=True,
    )
    assert broken.returncode != 0


def test_loopback_rewrite_keeps_ports() -> None:
    text = "server redirector-1:8010;\nserver edge-0 edge-0.edge:8004 check\nbind 0.0.0.0:8081"
    assert at_loopback(text) == (
        "server 127.0.0.1:8010;\nserver edge-0 127.0.0.1:8004 check\nbind 0.0.0.0:8081"
    )
