"""Accounts against the origin process: sign-in (on the upload service too), API keys and
their revocation, the CLI.

The origin runs as a real process; accounts are written by the service's own code
(``tests.support.accounts``) or by the real ``vsp`` command line.
"""

from __future__ import annotations

import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.accounts.tokens import new_token
from shared.core.settings import DEV_AUTH_TOKEN_SECRET
from tests.support.accounts import Account, create_account
from tests.support.paths import ROOT
from tests.support.processes import VSP, Processes

NAME_LIMIT = 3


@pytest.fixture(scope="module")
def origin(test_env: dict[str, str], test_root: Path) -> Iterator[str]:
    manager = Processes(test_root / "logs" / "accounts", test_env)
    env = {"LOGIN_MAX_FAILURES_PER_NAME": str(NAME_LIMIT)}
    try:
        yield manager.service("origin", env=env).url
    finally:
        manager.stop_all()


def sign_in(origin: str, name: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{origin}/api/auth/token", data={"username": name, "password": password}, timeout=10
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_sign_in_with_the_right_and_a_wrong_password(origin: str, account: Account) -> None:
    response = sign_in(origin, account.name, account.password)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert response.headers["cache-control"] == "no-store"
    me = httpx.get(f"{origin}/api/me", headers=bearer(body["access_token"]), timeout=10)
    assert me.json() == {"id": str(account.user_id), "name": account.name, "role": "uploader"}

    assert_unauthorized(sign_in(origin, account.name, account.password + "x"))
    assert_unauthorized(sign_in(origin, f"nobody-{uuid.uuid4().hex[:8]}", account.password))
    assert_unauthorized(httpx.get(f"{origin}/api/me", timeout=10))
    for credential in ("not-a-token", "vsp_0123456789abcdef_" + "a" * 43):
        assert_unauthorized(httpx.get(f"{origin}/api/me", headers=bearer(credential), timeout=10))


def test_an_expired_or_forged_token_is_refused(
    origin: str, account: Account, test_env: dict[str, str]
) -> None:
    secret = test_env.get("AUTH_TOKEN_SECRET", DEV_AUTH_TOKEN_SECRET)
    good = new_token(secret, account.user_id, 60)
    assert httpx.get(f"{origin}/api/me", headers=bearer(good), timeout=10).status_code == 200
    expired = new_token(secret, account.user_id, -1)
    response = httpx.get(f"{origin}/api/me", headers=bearer(expired), timeout=10)
    assert_unauthorized(response)
    assert "expired" in response.json()["detail"]
    forged = new_token("another-secret-of-enough-length-0123", account.user_id, 60)
    assert_unauthorized(httpx.get(f"{origin}/api/me", headers=bearer(forged), timeout=10))


def test_keys_are_shown_once_listed_without_secrets_and_revocable(
    origin: str, test_env: dict[str, str]
) -> None:
    owner = create_account(test_env)
    token = sign_in(origin, owner.name, owner.password).json()["access_token"]
    created = httpx.post(
        f"{origin}/api/keys", json={"name": "ci"}, headers=bearer(token), timeout=10
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith(f"vsp_{key['prefix']}_")
    assert key["last_used_at"] is None and key["revoked_at"] is None

    def listed() -> dict[str, dict[str, object]]:
        response = httpx.get(f"{origin}/api/keys", headers=bearer(token), timeout=10)
        assert key["key"].split("_", 2)[2] not in response.text
        return {k["id"]: k for k in response.json()["keys"]}

    assert set(listed()[key["id"]]) == {
        "id",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert listed()[key["id"]]["last_used_at"] is None
    me = httpx.get(f"{origin}/api/me", headers=bearer(key["key"]), timeout=10)
    assert me.json()["name"] == owner.name
    assert listed()[key["id"]]["last_used_at"] is not None

    # Someone else's key is not there to revoke.
    other = create_account(test_env)
    refused = httpx.delete(f"{origin}/api/keys/{key['id']}", headers=other.headers, timeout=10)
    assert refused.status_code == 404
    assert httpx.get(f"{origin}/api/me", headers=bearer(key["key"]), timeout=10).status_code == 200

    revoked = httpx.delete(f"{origin}/api/keys/{key['id']}", headers=bearer(token), timeout=10)
    assert revoked.status_code == 204
    response = httpx.get(f"{origin}/api/me", headers=bearer(key["key"]), timeout=10)
    assert_unauthorized(response)
    assert "revoked" in response.json()["detail"]
    assert listed()[key["id"]]["revoked_at"] is not None
    # The account's other credentials still work.
    assert httpx.get(f"{origin}/api/me", headers=owner.headers, timeout=10).status_code == 200


def test_failed_sign_ins_are_limited_per_name(origin: str, test_env: dict[str, str]) -> None:
    target = create_account(test_env)
    for _ in range(NAME_LIMIT):
        assert_unauthorized(sign_in(origin, target.name, "wrong password"))
    # Past the limit even the right password waits for the window to end.
    response = sign_in(origin, target.name, target.password)
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "too_many_requests" and body["limit"] == "login-name"
    assert int(response.headers["retry-after"]) == body["retry_after_seconds"] > 0
    # Other accounts sign in as before.
    other = create_account(test_env)
    assert sign_in(origin, other.name, other.password).status_code == 200


def test_the_upload_service_signs_in_on_the_same_limits(
    origin: str, procs: Processes, test_env: dict[str, str]
) -> None:
    env = {"LOGIN_MAX_FAILURES_PER_NAME": str(NAME_LIMIT)}
    uploads = procs.service("chunked_upload", env=env).url
    target = create_account(test_env)
    response = sign_in(uploads, target.name, target.password)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token = response.json()["access_token"]
    # One token for every service: the page signs in on its own origin, the player on its own.
    me = httpx.get(f"{origin}/api/me", headers=bearer(token), timeout=10)
    assert me.json()["name"] == target.name
    assert httpx.get(f"{uploads}/api/me", headers=bearer(token), timeout=10).status_code == 200
    # Failures on either service count against the one limit of the account name.
    for url in [uploads] * (NAME_LIMIT - 1) + [origin]:
        assert_unauthorized(sign_in(url, target.name, "wrong password"))
    refused = sign_in(uploads, target.name, target.password)
    assert refused.status_code == 429, refused.text
    assert refused.json()["limit"] == "login-name"


def test_failed_sign_ins_are_limited_per_address(
    procs: Processes, test_env: dict[str, str]
) -> None:
    # Other tests' failures from 127.0.0.1 count too: the limit is met within limit + 1 tries.
    limit = 4
    origin = procs.service("origin", env={"LOGIN_MAX_FAILURES_PER_ADDRESS": str(limit)}).url
    answers = [
        sign_in(origin, f"nobody-{uuid.uuid4().hex[:8]}", "wrong password")
        for _ in range(limit + 1)
    ]
    assert all(a.status_code == 401 for a in answers[:-1] if a.status_code != 429)
    refused = answers[-1]
    assert refused.status_code == 429, refused.text
    assert refused.json()["limit"] == "login-address"
    assert int(refused.headers["retry-after"]) > 0
    # A right password from that address waits too.
    account = create_account(test_env)
    assert sign_in(origin, account.name, account.password).status_code == 429


def vsp(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VSP, *args], cwd=ROOT, env=env, input=stdin, text=True, capture_output=True, timeout=60
    )


def test_cli_creates_users_signs_in_and_manages_keys(
    origin: str, test_env: dict[str, str], tmp_path: Path, account: Account
) -> None:
    env = {**test_env, "HOME": str(tmp_path)}
    env.pop("VSP_API_KEY", None)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    password = "a long enough password"

    made = vsp(env, "user", "create", name, "--password-stdin", stdin=password + "\n")
    assert made.returncode == 0, made.stderr
    assert f"created uploader {name}" in made.stdout
    again = vsp(env, "user", "create", name, "--password-stdin", stdin=password + "\n")
    assert again.returncode == 1 and "taken" in again.stderr

    assert vsp(env, "keys", "list", "--url", origin).returncode == 1  # not signed in yet
    login = vsp(env, "login", "--name", name, "--password-stdin", "--url", origin, stdin=password)
    assert login.returncode == 0, login.stderr
    stored = tmp_path / ".config" / "vsp" / "login.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700

    created = vsp(env, "keys", "create", "--name", "laptop", "--url", origin)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("vsp_") and "not shown again" in created.stderr
    me = httpx.get(f"{origin}/api/me", headers=bearer(key), timeout=10).json()
    assert me["name"] == name
    listing = vsp(env, "keys", "list", "--url", origin)
    assert key.split("_")[1] in listing.stdout and "laptop" in listing.stdout
    assert key.split("_", 2)[2] not in listing.stdout
    key_id = next(line.split()[0] for line in listing.stdout.splitlines() if "laptop" in line)

    # The key alone (no stored login) works as VSP_API_KEY.
    assert vsp(env, "logout").returncode == 0 and not stored.exists()
    with_key = vsp({**env, "VSP_API_KEY": key}, "keys", "revoke", key_id, "--url", origin)
    assert with_key.returncode == 0, with_key.stderr
    assert_unauthorized(httpx.get(f"{origin}/api/me", headers=bearer(key), timeout=10))
    refused = vsp({**env, "VSP_API_KEY": key}, "keys", "list", "--url", origin)
    assert refused.returncode != 0 and "401" in refused.stderr

    # An admin is made the same way.
    admin = f"adm-{uuid.uuid4().hex[:8]}"
    made = vsp(env, "user", "create", admin, "--admin", "--password-stdin", stdin=password)
    assert made.returncode == 0 and f"created admin {admin}" in made.stdout
