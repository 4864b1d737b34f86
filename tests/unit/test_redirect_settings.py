"""Redirector settings and the configuration update schema validate what they accept."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.redirector.schemas import ConfigUpdate, validate_host
from services.redirector.settings import Settings


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
        Settings(environment="production", signing_secret="x" * 32)
    ok = Settings(
        environment="production", signing_secret="x" * 32, redirector_admin_token="t" * 32
    )
    assert ok.redirector_admin_token == "t" * 32
