"""Rate limits on the public APIs: per client address and per account, shared through Redis.

Every API request that asks who is calling is counted: an account's against the account, from
any address; an anonymous one, or one with a bad credential, against its client address. Past
the limit the answer is a 429 naming it, with Retry-After; other addresses and accounts go on,
and admins are not limited. The client address is the connection's peer, or, behind a trusted
proxy, the nearest untrusted hop of X-Forwarded-For.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import Account, create_account
from tests.support.infra import private_queues
from tests.support.processes import Processes
from tests.support.security import refused

PER_ADDRESS = 6
PER_ACCOUNT = 4


@pytest.fixture(scope="module")
def services(test_env: dict[str, str], test_root: Path) -> Iterator[dict[str, str]]:
    """The origin and the streamed upload service with small limits; a second origin that
    trusts no proxy."""
    manager = Processes(test_root / "logs" / "api-rate-limits", test_env)
    limits = {
        "API_RATE_LIMIT_PER_ADDRESS": str(PER_ADDRESS),
        "API_RATE_LIMIT_PER_ACCOUNT": str(PER_ACCOUNT),
        "API_RATE_LIMIT_WINDOW_SECONDS": "60",
    }
    with private_queues("api-rate-limits") as queues:
        try:
            env = {**queues, **limits}
            urls = {
                "origin": manager.service("origin", env=env).url or "",
                "upload": manager.service("upload", env=env).url or "",
                "untrusting": manager.service("origin", env={**env, "TRUSTED_PROXIES": "[]"}).url
                or "",
            }
            yield urls
        finally:
            manager.stop_all()


def from_address(address: str, **headers: str) -> dict[str, str]:
    """Headers of a request that a proxy on 127.0.0.1 relays for ``address``."""
    return {"X-Forwarded-For": address, **headers}


def spent(response: httpx.Response, limit: str) -> None:
    body = refused(response, 429, error="too_many_requests")
    assert body["limit"] == limit, body
    assert 1 <= body["retry_after_seconds"] <= 60
    assert response.headers["retry-after"] == str(body["retry_after_seconds"])


def test_an_address_is_refused_past_its_limit_and_others_go_on(
    services: dict[str, str],
) -> None:
    url = f"{services['origin']}/api/videos"
    for _ in range(PER_ADDRESS):
        assert httpx.get(url, headers=from_address("198.51.100.1")).status_code == 200
    spent(httpx.get(url, headers=from_address("198.51.100.1")), "api-address")
    # The count is shared: another service of the suite refuses the same address at once.
    spent(
        httpx.get(
            f"{services['upload']}/api/videos/{'0' * 32}", headers=from_address("198.51.100.1")
        ),
        "api-address",
    )
    assert httpx.get(url, headers=from_address("198.51.100.2")).status_code == 200
    # What a client wrote left of the last hop proves nothing: the proxy's hop decides.
    spoofed = from_address("203.0.113.50, 198.51.100.1")
    spent(httpx.get(url, headers=spoofed), "api-address")
    # Guessing API keys is counted there too: a spent address gets no more 401s to learn from.
    guess = from_address("198.51.100.1", Authorization="Bearer vsp_abcdefgh_" + "x" * 43)
    spent(httpx.get(url, headers=guess), "api-address")
    guesser = from_address("198.51.100.3", Authorization="Bearer vsp_abcdefgh_" + "x" * 43)
    for _ in range(PER_ADDRESS):
        refused(httpx.get(url, headers=guesser), 401)
    spent(httpx.get(url, headers=guesser), "api-address")


def test_an_account_is_refused_past_its_limit_from_any_address(
    services: dict[str, str], test_env: dict[str, str], admin_account: Account
) -> None:
    account: Account = create_account(test_env)
    url = f"{services['origin']}/api/videos"
    for n in range(PER_ACCOUNT):
        answer = httpx.get(url, headers=from_address(f"198.51.100.{10 + n}", **account.headers))
        assert answer.status_code == 200, answer.text
    spent(httpx.get(url, headers=from_address("198.51.100.20", **account.headers)), "api-account")
    # Anonymous from the same address, and another account, go on.
    assert httpx.get(url, headers=from_address("198.51.100.20")).status_code == 200
    other = create_account(test_env)
    assert httpx.get(url, headers=from_address("198.51.100.21", **other.headers)).status_code == 200
    # Operators' admin accounts are not limited.
    for _ in range(PER_ACCOUNT + 2):
        answer = httpx.get(url, headers=admin_account.headers)
        assert answer.status_code == 200, answer.text


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(services: dict[str, str]) -> None:
    url = f"{services['untrusting']}/api/videos"
    for n in range(PER_ADDRESS):
        answer = httpx.get(url, headers=from_address(f"192.0.2.{n}"))
        assert answer.status_code == 200, answer.text
    # Every request came from 127.0.0.1, whatever it claimed.
    spent(httpx.get(url, headers=from_address("192.0.2.200")), "api-address")
