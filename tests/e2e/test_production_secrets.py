"""Production means real secrets: every service and the worker, started as a real process with a
placeholder or short secret, exits at once naming each wrong setting on stderr; real secrets
start."""

from __future__ import annotations

import secrets
import subprocess

import httpx

from services.runtime.registry import SERVICES
from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import VSP, Processes

# Each service's own token, beside the secrets every process holds.
SERVICE_TOKENS = {
    "origin": "ORIGIN_ADMIN_TOKEN",
    "redirector": "REDIRECTOR_ADMIN_TOKEN",
    "edge": "EDGE_ADMIN_TOKEN",
}
PLACEHOLDER = "compose-signing-secret-change-me"
SHORT = "twenty-bytes-0123456"


def commands() -> dict[str, list[str]]:
    """Every deployable's command line, each on a free port."""
    found = {name: [*VSP, "serve", name, "--port", str(free_port())] for name in sorted(SERVICES)}
    found["worker"] = [*VSP, "worker", "--mode", "push", "--metrics-port", str(free_port())]
    return found


def real_secrets() -> dict[str, str]:
    """What `openssl rand -hex 32` would give each secret (the broker's password included)."""
    tokens = {name: secrets.token_hex(32) for name in SERVICE_TOKENS.values()}
    return {
        "ENVIRONMENT": "production",
        "SIGNING_SECRET": secrets.token_hex(32),
        "AUTH_TOKEN_SECRET": secrets.token_hex(32),
        "AMQP_URL": f"amqp://vsp:{secrets.token_hex(32)}@127.0.0.1:5672/",
        **tokens,
    }


def test_every_process_refuses_a_placeholder_or_short_secret(test_env: dict[str, str]) -> None:
    bad = {
        **real_secrets(),
        "SIGNING_SECRET": PLACEHOLDER,
        "AUTH_TOKEN_SECRET": SHORT,
        **dict.fromkeys(SERVICE_TOKENS.values(), SHORT),
    }
    started = {
        name: subprocess.Popen(
            args,
            cwd=ROOT,
            env={**test_env, **bad},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands().items()
    }
    for name, popen in started.items():
        out, err = popen.communicate(timeout=120)
        assert popen.returncode == 1, (name, popen.returncode, out, err)
        lines = err.splitlines()
        assert "invalid settings (" in lines[0], (name, err)
        assert "  SIGNING_SECRET is a placeholder; set a real secret" in lines, (name, err)
        assert "  AUTH_TOKEN_SECRET is 20 bytes; at least 32 in production" in lines, (name, err)
        token = SERVICE_TOKENS.get(name)
        if token:
            assert f"  {token} is 20 bytes; at least 32 in production" in lines, (name, err)
        # The reasons only: no traceback, and no value of a secret.
        assert "Traceback" not in err and PLACEHOLDER not in err and SHORT not in err, err


def test_real_secrets_start_in_production(procs: Processes) -> None:
    # The balancer and the redirector reach only what this machine has without a password
    # (PostgreSQL and Redis by trust): the broker's password is real but never used.
    good = real_secrets()
    started = [procs.service(name, env=good, wait=False) for name in ("balancer", "redirector")]
    procs.wait_ready(started)
    for proc in started:
        assert httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
