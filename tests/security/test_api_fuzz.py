"""Every HTTP service's OpenAPI, fuzzed by schemathesis against the running process.

Each service is started as a real process (the edge over an origin, the balancer over that
edge) and every operation of its ``/openapi.json`` gets generated requests, valid and invalid,
with the admin token the test set, an account's API key where the operation names the bearer
security scheme, a wrong one, and without any. No answer may be a 5xx or differ from the
schema: undeclared status, content type or body shape. Examples are derandomized so a run is
repeatable; at least ``REQUESTS_PER_SERVICE`` requests reach each service.

Run alone: ``.venv/bin/python -m pytest -p no:cacheprovider tests/security/test_api_fuzz.py``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.accounts import Account
from tests.support.processes import Proc, Processes

REQUESTS_PER_SERVICE = 500
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
TOKENS = {
    "origin": ("ORIGIN_ADMIN_TOKEN", "fuzz-origin-admin-token-0123"),
    "edge": ("EDGE_ADMIN_TOKEN", "fuzz-edge-admin-token-01234"),
    "redirector": ("REDIRECTOR_ADMIN_TOKEN", "fuzz-redirector-admin-token"),
}
# Headers a protocol requires, fixed in some runs so that the fuzzer gets past their check.
PROTOCOL_HEADERS = {"chunked_upload": {"Tus-Resumable": "1.0.0"}}
SERVICES = ["upload", "chunked_upload", "origin", "edge", "redirector", "balancer"]

# What every generated request also carries: a request id (echoed by every service) and query
# parameters no operation declares. They keep operations with few inputs from running out of
# distinct requests, and fuzz what the middleware reads from every request.
_HEADER_TEXT = st.characters(codec="latin-1", min_codepoint=0x21, exclude_categories=["Cc", "Zs"])
NOISE = st.tuples(
    st.text(_HEADER_TEXT, max_size=160),
    st.dictionaries(st.from_regex(r"\Az[a-z]{1,8}\Z"), st.text(max_size=40), max_size=3),
)
# A run that stops short of its examples found every distinct request it could make.
MAX_PASSES = 4


def token_of(name: str) -> str | None:
    return TOKENS[name][1] if name in TOKENS else None


@pytest.fixture(scope="module")
def fleet(test_env: dict[str, str], test_root: Path) -> Iterator[dict[str, Proc]]:
    """One process of each service, started together; each test waits for the one it fuzzes.

    The edge fronts the origin and the balancer that edge.
    """
    procs = Processes(test_root / "logs" / "api-fuzz", test_env)
    env = {name: {var: value} for name, (var, value) in TOKENS.items()}
    try:
        started = {
            name: procs.service(name, env=env.get(name), wait=False)
            for name in ("upload", "chunked_upload", "origin", "redirector")
        }
        started["edge"] = procs.service(
            "edge",
            env={
                **env["edge"],
                "EDGE_ORIGIN_URL": started["origin"].url,
                "EDGE_CACHE_DIR": str(test_root / "api-fuzz-edge-cache"),
            },
            wait=False,
        )
        backends = json.dumps([{"url": started["edge"].url, "name": "edge-fuzz"}])
        started["balancer"] = procs.service(
            "balancer", env={"BALANCER_BACKENDS": backends}, wait=False
        )
        yield started
    finally:
        procs.stop_all()


@dataclass
class Tally:
    """What one service's fuzzing sent and what failed."""

    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _takes_header(operation: Any, name: str) -> bool:
    return any(
        p.get("in") == "header" and p.get("name", "").lower() == name.lower()
        for p in operation.definition.raw.get("parameters", [])
    )


@dataclass(frozen=True)
class Run:
    """One operation fuzzed in one generation mode, with some headers fixed (or none)."""

    operation: Any
    mode: GenerationMode
    headers: dict[str, str] | None

    def __str__(self) -> str:
        fixed = ", ".join(f"{k}: {v}" for k, v in (self.headers or {}).items()) or "nothing fixed"
        return f"{self.operation.label} ({self.mode.value}, {fixed})"


def _secured(operation: Any) -> bool:
    return bool(operation.definition.raw.get("security"))


def _runs(operation: Any, name: str, account: Account) -> list[Run]:
    """Both generation modes, each with every header generated and with some of them fixed.

    An operation taking the admin token or an account's credential is also fuzzed with the
    right one (to reach its handler) and a wrong one; a tus operation also with the protocol
    version it requires, with the account's credential.
    """
    variants: list[dict[str, str] | None] = [None]
    credentials: list[str] = []
    token = token_of(name)
    if token and (_takes_header(operation, "authorization") or _secured(operation)):
        credentials.append(token)
    if _secured(operation):
        credentials.append(account.api_key)
    for credential in credentials:
        variants += [
            {"authorization": f"Bearer {credential}"},
            {"authorization": f"Bearer x{credential}"},
        ]
    for header, value in PROTOCOL_HEADERS.get(name, {}).items():
        if _takes_header(operation, header):
            variants.append({header: value})
            if _secured(operation):
                variants.append({header: value, **account.headers})
    return [Run(operation, mode, h) for mode in GenerationMode for h in variants]


def _fuzz(
    session: requests.Session, base_url: str, run: Run, examples: int, seed: int, tally: Tally
) -> int:
    """Send up to ``examples`` generated requests for ``run``; how many were sent."""
    strategy = st.tuples(
        run.operation.as_strategy(generation_mode=run.mode, headers=run.headers), NOISE
    )
    sent = 0

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    @hypothesis.given(strategy)
    def fuzz(drawn: tuple[Any, tuple[str, dict[str, str]]]) -> None:
        nonlocal sent
        case, (request_id, extra) = drawn
        response = case.call(
            base_url=base_url,
            session=session,
            headers={"X-Request-ID": request_id} if request_id else None,
            params=extra or None,
            timeout=15,
        )
        sent += 1
        tally.requests += 1
        tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    try:
        fuzz()
    except Unsatisfiable:
        # Nothing to make invalid (no inputs, or only free text): no negative request exists.
        pass
    except (Exception, FailureGroup) as exc:
        tally.failures.append(f"{run}: {exc}")
    return sent


def fuzz_service(name: str, base_url: str, account: Account) -> Tally:
    """Fuzz every operation of service ``name`` at ``base_url`` until enough requests were sent."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    runs = [run for op in schema.get_all_operations() for run in _runs(op.ok(), name, account)]
    tally = Tally()
    with requests.Session() as session:
        for seed in range(MAX_PASSES):
            missing = REQUESTS_PER_SERVICE - tally.requests
            if missing <= 0 or not runs:
                break
            examples = math.ceil(missing * 1.1 / len(runs))
            runs = [
                r for r in runs if _fuzz(session, base_url, r, examples, seed, tally) == examples
            ]
    return tally


@pytest.mark.parametrize("name", SERVICES)
def test_openapi_fuzz(fleet: dict[str, Proc], name: str, account: Account) -> None:
    url = fleet[name].url
    fleet[name].wait_ready(timeout=90)
    started = time.monotonic()
    try:
        tally = fuzz_service(name, url, account)
    finally:
        if name == "redirector":
            # The fuzzer changed the configuration all instances share: back to the environment.
            token = token_of(name)
            reset = requests.delete(f"{url}/config", headers={"Authorization": f"Bearer {token}"})
            assert reset.status_code == 200, reset.text
    seconds = time.monotonic() - started
    print(f"{name}: {tally.requests} requests in {seconds:.1f} s, statuses {tally.statuses}")
    assert not tally.failures, "\n\n".join(tally.failures)
    assert tally.requests >= REQUESTS_PER_SERVICE, tally
