"""The origin reads the streaming gateway's ``STREAMING_...`` setting names as aliases, and
holds the gateway's TTL bounds (playlists 60..3600 s, segments 10..600 s) outside the test
suite, refusing a value out of them with the setting's name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.origin.settings import Settings, parse_bitrates

SECRET = "unit-test-secret-0123456789"
# The platform's names of the aliased settings, which would win over the gateway's.
PLATFORM_NAMES = (
    "SIGNING_SECRET",
    "PUBLIC_ORIGIN_URL",
    "ORIGIN_CDN_BASE_URL",
    "ORIGIN_PLAYLIST_TTL_SECONDS",
    "ORIGIN_SEGMENT_TTL_SECONDS",
    "ORIGIN_AVAILABLE_BITRATES",
)


@pytest.fixture(autouse=True)
def gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: the session's environment may hold the platform's names."""
    for name in PLATFORM_NAMES:
        monkeypatch.delenv(name, raising=False)


def local(**overrides: object) -> Settings:
    return Settings(environment="local", signing_secret=SECRET, **overrides)  # type: ignore[arg-type]


# The gateway's environment -> (the setting it becomes, its value there).
GATEWAY_ENV = {
    "STREAMING_PLAYLIST_TTL_SECONDS": ("origin_playlist_ttl_seconds", "120", 120),
    "STREAMING_SEGMENT_TTL_SECONDS": ("origin_segment_ttl_seconds", "30", 30),
    "STREAMING_BASE_URL": ("public_origin_url", "http://gw.example:8000", "http://gw.example:8000"),
    "STREAMING_CDN_BASE_URL": ("origin_cdn_base_url", "https://cdn.example", "https://cdn.example"),
    "STREAMING_AVAILABLE_BITRATES": ("origin_available_bitrates", "256000, 96000", [256000, 96000]),
    "STREAMING_SIGNING_SECRET": (
        "signing_secret",
        "gateway-secret-0123456789",
        "gateway-secret-0123456789",
    ),
}


def test_gateway_names_are_read_as_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (_, raw, _) in GATEWAY_ENV.items():
        monkeypatch.setenv(name, raw)
    settings = Settings(environment="local")
    read = {name: getattr(settings, field) for name, (field, _, _) in GATEWAY_ENV.items()}
    assert read == {name: value for name, (_, _, value) in GATEWAY_ENV.items()}


def test_the_platforms_own_names_win_and_cdn_base_url_is_read_unprefixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMING_PLAYLIST_TTL_SECONDS", "120")
    monkeypatch.setenv("ORIGIN_PLAYLIST_TTL_SECONDS", "900")
    monkeypatch.setenv("CDN_BASE_URL", "https://cdn.example")
    settings = Settings(environment="local", signing_secret=SECRET)
    assert settings.origin_playlist_ttl_seconds == 900
    assert settings.origin_cdn_base_url == "https://cdn.example"
    # Keyword arguments keep working by the field's name.
    assert local(origin_segment_ttl_seconds=10).origin_segment_ttl_seconds == 10


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("origin_playlist_ttl_seconds", 59, "ORIGIN_PLAYLIST_TTL_SECONDS"),
        ("origin_playlist_ttl_seconds", 3601, "ORIGIN_PLAYLIST_TTL_SECONDS"),
        ("origin_segment_ttl_seconds", 9, "ORIGIN_SEGMENT_TTL_SECONDS"),
        ("origin_segment_ttl_seconds", 601, "ORIGIN_SEGMENT_TTL_SECONDS"),
    ],
)
def test_ttls_out_of_the_gateways_bounds_are_refused(field: str, value: int, named: str) -> None:
    with pytest.raises(ValidationError, match=f"(?i){named}"):
        local(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("origin_playlist_ttl_seconds", 60),
        ("origin_playlist_ttl_seconds", 3600),
        ("origin_segment_ttl_seconds", 10),
        ("origin_segment_ttl_seconds", 600),
    ],
)
def test_the_bounds_themselves_are_accepted(field: str, value: int) -> None:
    assert getattr(local(**{field: value}), field) == value


def test_the_test_suite_may_sign_shorter_lives() -> None:
    settings = Settings(environment="test", signing_secret=SECRET, origin_segment_ttl_seconds=2)
    assert settings.origin_segment_ttl_seconds == 2


def test_available_bitrates_are_bounded_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_bitrates("256000,96000") == [256000, 96000]
    for bad in ("256k", "1,,2", "-1", ",".join(["1"] * 33)):
        with pytest.raises(ValueError):
            parse_bitrates(bad)
    monkeypatch.setenv("STREAMING_AVAILABLE_BITRATES", "256k")
    with pytest.raises(ValidationError, match="comma-separated integers"):
        Settings(environment="local", signing_secret=SECRET)
    monkeypatch.setenv("STREAMING_AVAILABLE_BITRATES", "")
    assert Settings(environment="local", signing_secret=SECRET).origin_available_bitrates is None
