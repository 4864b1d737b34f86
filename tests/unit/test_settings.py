"""Settings refuse unsafe secrets (everywhere too short; in production also placeholders and
development defaults, named one line each), and fault injection in production."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from pydantic import ValidationError

from services.chunked_upload.settings import Settings as ChunkedUploadSettings
from services.edge.settings import Settings as EdgeSettings
from services.origin.settings import DEV_ADMIN_TOKEN as ORIGIN_DEV_TOKEN
from services.origin.settings import Settings as OriginSettings
from services.redirector.settings import Settings as RedirectorSettings
from services.runtime.registry import SERVICES
from services.runtime.settings import load_settings
from services.transcoder.settings import Settings as TranscoderSettings
from shared.core.settings import DEV_SIGNING_SECRET, BaseServiceSettings, is_placeholder


def real() -> str:
    return secrets.token_hex(32)


def production(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a production configuration every service accepts."""
    return {
        "environment": "production",
        "signing_secret": real(),
        "auth_token_secret": real(),
        "amqp_url": f"amqp://vsp:{real()}@rabbitmq:5672/",
        "origin_admin_token": real(),
        "redirector_admin_token": real(),
        **overrides,
    }


def problems(error: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    """The lines of the secrets check's message."""
    [only] = error.value.errors()
    return str(only["msg"]).removeprefix("Value error, ").splitlines()


def test_short_secret_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        BaseServiceSettings(signing_secret="short")
    with pytest.raises(ValidationError, match="EDGE_ADMIN_TOKEN is 5 bytes; at least 16"):
        EdgeSettings(edge_admin_token="short")


def test_development_defaults_are_fine_outside_production(monkeypatch: pytest.MonkeyPatch) -> None:
    # The defaults themselves, not the secrets a test run's environment sets.
    monkeypatch.delenv("SIGNING_SECRET", raising=False)
    monkeypatch.delenv("AUTH_TOKEN_SECRET", raising=False)
    for spec in SERVICES.values():
        assert spec.settings_class()(environment="local").environment == "local"
    assert TranscoderSettings(environment="test").signing_secret == DEV_SIGNING_SECRET


def test_default_secret_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="real secret"):
        BaseServiceSettings(**production(signing_secret=DEV_SIGNING_SECRET))
    secret = "x" * 32
    ok = BaseServiceSettings(**production(signing_secret=secret))
    assert ok.signing_keys == {"k1": secret}


def test_every_wrong_setting_is_named_with_its_reason() -> None:
    with pytest.raises(ValidationError) as error:
        OriginSettings(
            environment="production",
            signing_secret="compose-signing-secret-change-me",
            origin_admin_token="twelve-bytes-0123",
            fault_admin_token="minioadmin-but-longer-than-16",
        )
    assert problems(error) == [
        "SIGNING_SECRET is a placeholder; set a real secret",
        "AUTH_TOKEN_SECRET is the development default; set a real secret",
        "FAULT_ADMIN_TOKEN is 29 bytes; at least 32 in production",
        "ORIGIN_ADMIN_TOKEN is 17 bytes; at least 32 in production",
        "AMQP_URL has a password that is a placeholder; set a real secret",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "CHANGE-ME-0123456789-0123456789-0123456789",
        "please-changeme-0123456789-0123456789",
        "dev-only-origin-admin-token-0123456789",
        ORIGIN_DEV_TOKEN,
    ],
)
def test_placeholders_are_refused_whatever_their_length(value: str) -> None:
    assert is_placeholder(value)
    with pytest.raises(ValidationError) as error:
        RedirectorSettings(**production(redirector_admin_token=value))
    assert problems(error) == ["REDIRECTOR_ADMIN_TOKEN is a placeholder; set a real secret"]


def test_each_service_checks_its_own_tokens() -> None:
    for settings_class, name in (
        (OriginSettings, "origin_admin_token"),
        (RedirectorSettings, "redirector_admin_token"),
        (EdgeSettings, "edge_admin_token"),
    ):
        with pytest.raises(ValidationError, match=f"{name.upper()} is 20 bytes; at least 32"):
            settings_class(**production(**{name: "a" * 20}))
    # Unset, an optional token turns its endpoints off and is not asked for.
    assert EdgeSettings(**production()).edge_admin_token is None
    assert EdgeSettings(**production(edge_admin_token=real())).edge_admin_token


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "a placeholder"),
        ("amqp://127.0.0.1:5672/", "no password (the broker's default guest login)"),
        ("amqp://vsp:vsp-rabbitmq@rabbitmq:5672/", "a placeholder"),
        ("amqp://vsp:short-password@rabbitmq:5672/", "14 bytes; at least 32"),
    ],
)
def test_the_broker_url_needs_a_real_password(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as error:
        BaseServiceSettings(**production(amqp_url=url))
    [line] = problems(error)
    assert line.startswith("AMQP_URL ") and problem in line


def test_database_and_redis_passwords_are_checked_when_there_is_one() -> None:
    with pytest.raises(ValidationError) as error:
        BaseServiceSettings(
            **production(
                database_url="postgresql+asyncpg://vsp:vsp-postgres@postgres:5432/vsp",
                redis_url="redis://:changeme@redis:6379/0",
            )
        )
    assert problems(error) == [
        "DATABASE_URL has a password that is a placeholder; set a real secret",
        "REDIS_URL has a password that is a placeholder; set a real secret",
    ]
    # Without one (trust or peer authentication on a private network) they are accepted; a
    # percent-encoded password is judged decoded.
    password = "%2F" * 32
    ok = BaseServiceSettings(
        **production(
            database_url="postgresql+asyncpg://vsp@postgres:5432/vsp",
            redis_url=f"redis://:{password}@redis:6379/0",
        )
    )
    assert not list(ok.secret_problems())


def test_object_store_keys_are_checked_when_the_store_is_s3() -> None:
    assert BaseServiceSettings(**production(storage_backend="fs")).s3_secret_key == "minioadmin"
    with pytest.raises(ValidationError) as error:
        BaseServiceSettings(**production(storage_backend="s3"))
    assert problems(error) == [
        "S3_SECRET_KEY is the development default; set a real secret",
        "S3_ACCESS_KEY is the object store's default user",
    ]
    ok = BaseServiceSettings(
        **production(storage_backend="s3", s3_access_key="vsp", s3_secret_key=real())
    )
    assert ok.storage_backend == "s3"


def test_previous_keys_still_verify() -> None:
    s = BaseServiceSettings(
        signing_secret="new-secret-0123456789",
        signing_key_id="k2",
        signing_previous_keys={"k1": "old-secret-0123456789"},
    )
    assert s.signing_keys == {"k1": "old-secret-0123456789", "k2": "new-secret-0123456789"}
    with pytest.raises(ValidationError) as error:
        BaseServiceSettings(**production(signing_previous_keys={"k0": "old-secret-0123456789"}))
    assert problems(error) == ["SIGNING_PREVIOUS_KEYS[k0] is 21 bytes; at least 32 in production"]


def test_no_secret_value_appears_in_the_error() -> None:
    leaked = "leaked-" + "9" * 20
    with pytest.raises(ValidationError) as error:
        BaseServiceSettings(**production(signing_secret=leaked, media_max_streams=0))
    with pytest.raises(ValidationError) as refused:
        BaseServiceSettings(**production(signing_secret=leaked))
    assert leaked not in str(error.value) and leaked not in str(refused.value)


def test_load_settings_exits_with_one_line_per_wrong_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SIGNING_SECRET", "short-but-16-bytes")
    with pytest.raises(SystemExit) as stopped:
        load_settings(OriginSettings)
    message = str(stopped.value.code)
    assert message.splitlines()[0] == "invalid settings (services.origin.settings):"
    assert "  SIGNING_SECRET is 18 bytes; at least 32 in production" in message.splitlines()
    assert "  ORIGIN_ADMIN_TOKEN is the development default; set a real secret" in message
    assert "short-but-16-bytes" not in message and "Traceback" not in message


def test_fault_injection_refused_in_production() -> None:
    stall = {"chunked_upload_fault_stall_at": "assembled"}
    with pytest.raises(ValidationError, match="CHUNKED_UPLOAD_FAULT_STALL_AT"):
        ChunkedUploadSettings(**production(**stall))
    assert ChunkedUploadSettings(environment="test", **stall).chunked_upload_fault_stall_at
