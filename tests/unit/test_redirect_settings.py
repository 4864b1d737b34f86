"""Redirector settings and the configuration update schema validate what they accept."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from services.redirector.schemas import ConfigUpdate, validate_host
from services.redirector.settings import Settings
from shared.http.h1_limits import Limits
from shared.runtime.servers import KEEP_ALIVE_SECONDS


@pytest.mark.parametrize("host", ["cdn.example.com", "CDN.Example.com", "localhost:8081", "a-b.c"])
def test_host_names_are_accepted(host: str) -> None:
    assert validate_host(host) == host.lower()


@pytest.mark.parametrize(
    "host",
    [
        "",
        "http://cdn",
        "cdn/x",
        "-cdn.example",
        "cdn..example",
        "cdn:0",
        "cdn:70000",
        "c d",
        "evil.example/@x",
        "a" * 64 + ".com",
    ],
)
def test_bad_host_names_are_refused(host: str) -> None:
    with pytest.raises(ValueError):
        validate_host(host)


def test_update_validates_ratio_status_and_unknown_fields() -> None:
    assert ConfigUpdate(ratio=1).ratio == 1
    for bad in (
        {"ratio": 0},
        {"ratio": -3},
        {"status_code": 200},
        {"cdn_host": "x/y"},
        {"colour": "blue"},
    ):
        with pytest.raises(ValidationError):
            ConfigUpdate(**bad)  # type: ignore[arg-type]


def test_settings_refuse_bad_fallbacks_and_dev_token_in_production() -> None:
    with pytest.raises(ValidationError):
        Settings(redirector_ratio=0)
    with pytest.raises(ValidationError):
        Settings(redirector_cdn_host="not a host")
    with pytest.raises(ValidationError):
        Settings(redirector_status_code=200)
    with pytest.raises(ValidationError):
        Settings(redirector_cdn_target="cdn")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(environment="production", signing_secret="x" * 32)
    ok = Settings(
        environment="production",
        signing_secret="x" * 32,
        auth_token_secret="y" * 32,
        amqp_url=f"amqp://vsp:{'z' * 32}@rabbitmq:5672/",
        redirector_admin_token="t" * 32,
    )
    assert ok.redirector_admin_token == "t" * 32


def test_the_cdn_target_is_the_host_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.model_fields["redirector_cdn_target"].default == "host"
    monkeypatch.setenv("REDIRECTOR_CDN_TARGET", "edges")
    assert Settings().redirector_cdn_target == "edges"


def test_the_listener_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIRECTOR_MAX_REQUEST_LINE_BYTES", "4096")
    monkeypatch.setenv("REDIRECTOR_HEADER_TIMEOUT_SECONDS", "2.5")
    limits = Settings().http_limits
    assert limits == replace(Limits(), request_line_bytes=4096, header_timeout_seconds=2.5)
    assert (limits.header_count, limits.header_bytes) == (100, 16 * 1024)
    assert limits.keep_alive_seconds == KEEP_ALIVE_SECONDS
    for bad in (
        {"redirector_max_request_line_bytes": 10},
        {"redirector_max_headers": 0},
        {"redirector_header_timeout_seconds": 0},
        {"redirector_keep_alive_seconds": -1},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]
