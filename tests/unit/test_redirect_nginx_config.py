"""nginx.conf for the redirectors: rendered from one function, accepted by the real nginx."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.configs.proxies import DEFAULT_REDIRECTORS, Backend, main, render_nginx
from tests.support.paths import ROOT


def test_repository_nginx_conf_is_the_rendered_default() -> None:
    assert (ROOT / "nginx.conf").read_text() == render_nginx(DEFAULT_REDIRECTORS)


def test_four_redirectors_with_keepalive_and_origin_to_haproxy() -> None:
    text = render_nginx(DEFAULT_REDIRECTORS, haproxy="haproxy:8081")
    for n, port in zip(range(1, 5), range(8010, 8014), strict=True):
        assert f"server redirector-{n}:{port};" in text
    assert "keepalive 64;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_http_version 1.1;" in text
    for path in ("= /", "= /config", "= /whoami"):
        assert f"location {path} {{\n            proxy_pass http://redirectors;" in text
    assert "location /origin/ {" in text and "server haproxy:8081;" in text


def test_cli_prints_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    main(["nginx", "--redirector", "a=127.0.0.1:1", "--haproxy", "127.0.0.1:2"])
    assert capsys.readouterr().out == render_nginx(
        [Backend("a", "127.0.0.1:1")], haproxy="127.0.0.1:2"
    )


def test_no_redirectors_is_an_error() -> None:
    with pytest.raises(ValueError):
        render_nginx([])


def test_unprivileged_render_passes_nginx_t(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        render_nginx(
            [Backend(f"r{n}", f"127.0.0.1:{18010 + n}") for n in range(4)],
            listen="127.0.0.1:18080",
            haproxy="127.0.0.1:18081",
            pid=str(tmp_path / "nginx.pid"),
            error_log=str(tmp_path / "error.log"),
            temp_dir=str(tmp_path),
            worker_processes=1,
        )
    )
    checked = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
