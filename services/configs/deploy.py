"""Configuration files the deployments carry, rendered from the one place each is defined.

Kustomize reads files only from under its own folder, and compose names containers where
``vsp up`` names 127.0.0.1 ports, so both get renderings (or copies) of the repository's
configs. ``python -m services.configs.deploy --write`` refreshes them; a test fails when they
drift. Secrets are generated too, but once per deployment and never committed:
``python -m services.configs.deploy --secrets`` writes the env files kustomize's
secretGenerator reads (ignored by git), keeping any that already exist.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from services.configs.prometheus import render_kubernetes
from services.configs.proxies import Backend, render_haproxy, render_nginx
from services.upload.tls import ensure_self_signed
from shared.core import ports

ROOT = Path(__file__).resolve().parents[2]
K8S = Path("deploy/k8s")
COMPOSE = Path("deploy/compose")
# Where docker compose mounts the front door's certificate from.
COMPOSE_TLS = COMPOSE / "tls"

COMPOSE_EDGES = tuple(
    Backend(f"edge-{i}", f"edge-{i}:{port}") for i, port in enumerate(ports.EDGES, start=1)
)
# StatefulSet pods behind the headless service "edge" have stable names.
K8S_EDGES = tuple(Backend(f"edge-{i}", f"edge-{i}.edge:{ports.EDGE}") for i in range(2))
# One upstream: the redirector Service spreads connections over however many pods the HPA runs.
K8S_REDIRECTORS = (Backend("redirector", f"redirector:{ports.REDIRECTOR}"),)

# Files copied as they are from where they are maintained.
COPIES = {
    K8S / "prometheus" / "alerts.yml": Path("deploy/prometheus/alerts.yml"),
    K8S / "grafana" / "datasources.yml": Path(
        "deploy/grafana/provisioning/datasources/prometheus.yml"
    ),
    K8S / "grafana" / "dashboards.yml": Path("deploy/grafana/provisioning/dashboards/vsp.yml"),
}


def rendered() -> dict[Path, str]:
    """Repository-relative path to content of every generated deployment file."""
    files = {
        COMPOSE / "haproxy.cfg": render_haproxy(COMPOSE_EDGES),
        K8S / "proxies" / "haproxy.cfg": render_haproxy(K8S_EDGES),
        K8S / "proxies" / "nginx.conf": render_nginx(
            K8S_REDIRECTORS, haproxy=f"haproxy:{ports.HAPROXY}"
        ),
        K8S / "prometheus" / "prometheus.yml": render_kubernetes(),
    }
    copies = dict(COPIES)
    for board in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        copies[K8S / "grafana" / "dashboards" / board.name] = board.relative_to(ROOT)
    files.update({target: (ROOT / source).read_text() for target, source in copies.items()})
    return files


def random_secret() -> str:
    """32 random bytes as hex: long enough for production, and safe inside a URL."""
    return secrets.token_hex(32)


def k8s_secrets(token: Callable[[], str] = random_secret) -> dict[Path, dict[str, str]]:
    """Repository-relative path to the variables of every Secret's env file, freshly made.

    A password appears twice (the server's own variable, and the URL or key the platform
    connects with), so each is drawn once.
    """
    postgres, rabbitmq, minio = token(), token(), token()
    return {
        K8S / "secrets.env": {
            "DATABASE_URL": f"postgresql+asyncpg://vsp:{postgres}@postgres:5432/vsp",
            "AMQP_URL": f"amqp://vsp:{rabbitmq}@rabbitmq:5672/",
            "S3_ACCESS_KEY": "vsp",
            "S3_SECRET_KEY": minio,
            "SIGNING_SECRET": token(),
            "AUTH_TOKEN_SECRET": token(),
        },
        K8S / "origin-secrets.env": {"ORIGIN_ADMIN_TOKEN": token()},
        K8S / "redirector-secrets.env": {"REDIRECTOR_ADMIN_TOKEN": token()},
        K8S / "infra-secrets.env": {
            "POSTGRES_PASSWORD": postgres,
            "RABBITMQ_DEFAULT_PASS": rabbitmq,
            "MINIO_ROOT_USER": "vsp",
            "MINIO_ROOT_PASSWORD": minio,
            "GF_SECURITY_ADMIN_PASSWORD": token(),
        },
    }


def env_text(variables: dict[str, str]) -> str:
    """An env file as kustomize reads it: NAME=value lines."""
    return "".join(f"{name}={value}\n" for name, value in variables.items())


def write_secrets(root: Path = ROOT) -> list[Path]:
    """Write the Secrets' env files under ``root``; the paths written.

    All or nothing: when any exists they are left alone (delete them all to rotate), since the
    passwords they share must agree.
    """
    files = k8s_secrets()
    if any((root / path).exists() for path in files):
        return []
    for path, variables in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600)
        target.write_text(env_text(variables))
    return list(files)


def main(argv: Sequence[str] | None = None) -> None:
    """Write (with --write) or list the generated files that differ from their source."""
    parser = argparse.ArgumentParser(prog="python -m services.configs.deploy")
    parser.add_argument("--write", action="store_true", help="write the files")
    parser.add_argument(
        "--secrets",
        action="store_true",
        help="generate the Kubernetes secrets (unless they exist) instead",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help=f"make a self-signed certificate for the compose front door in {COMPOSE_TLS} "
        "(unless one is there)",
    )
    args = parser.parse_args(argv)
    if args.tls:
        cert, key = ensure_self_signed(
            ROOT / COMPOSE_TLS / "tls.crt", ROOT / COMPOSE_TLS / "tls.key"
        )
        print(f"certificate: {cert}\nkey: {key}")
        return
    if args.secrets:
        written = write_secrets()
        for path in written:
            print(f"wrote: {path}")
        if not written:
            print(f"kept: the secrets under {K8S} exist (delete them all to rotate)")
        return
    stale = []
    for path, text in rendered().items():
        target = ROOT / path
        if not target.exists() or target.read_text() != text:
            stale.append(path)
            if args.write:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    for path in stale:
        print(f"{'wrote' if args.write else 'stale'}: {path}")
    if stale and not args.write:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
