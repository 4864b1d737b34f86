"""nginx.conf for the redirectors and the front door: rendered from one function, accepted by
the real nginx."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.cli.up import local_certificate
from services.configs.proxies import (
    COMPOSE_FRONT_DOOR,
    DEFAULT_REDIRECTORS,
    Backend,
    FrontDoor,
    main,
    render_nginx,
)
from tests.support.paths import ROOT


def test_repository_nginx_conf_is_the_rendered_default() -> None:
    expected = render_nginx(DEFAULT_REDIRECTORS, front_door=COMPOSE_FRONT_DOOR)
    assert (ROOT / "nginx.conf").read_text() == expected


def test_cli_prints_the_front_door_for_compose(capsys: pytest.CaptureFixture[str]) -> None:
    main(["nginx", "--front-door"])
    assert capsys.readouterr().out == (ROOT / "nginx.conf").read_text()


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


@pytest.mark.parametrize("with_front_door", [False, True], ids=["redirectors", "front-door"])
def test_unprivileged_render_passes_nginx_t(tmp_path: Path, with_front_door: bool) -> None:
    front_door = None
    if with_front_door:
        cert, key = local_certificate(tmp_path)
        front_door = FrontDoor(
            origin="127.0.0.1:18003",
            upload="127.0.0.1:18001",
            chunked_upload="127.0.0.1:18002",
            balancer="127.0.0.1:18090",
            certificate=str(cert),
            certificate_key=str(key),
            http_listen="127.0.0.1:18000",
            https_listen="127.0.0.1:18443",
            hsts=True,
        )
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
            front_door=front_door,
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
