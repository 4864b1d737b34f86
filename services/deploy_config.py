"""Configuration files the deployments carry, rendered from the one place each is defined.

Kustomize reads files only from under its own folder, and compose names containers where
``vsp up`` names 127.0.0.1 ports, so both get renderings (or copies) of the repository's
configs. ``python -m services.deploy_config --write`` refreshes them; a test fails when they
drift.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from services.prometheus_config import render_kubernetes
from services.proxy_config import Backend, render_haproxy, render_nginx

ROOT = Path(__file__).resolve().parent.parent
K8S = Path("deploy/k8s")
COMPOSE = Path("deploy/compose")

COMPOSE_EDGES = (Backend("edge-1", "edge-1:8004"), Backend("edge-2", "edge-2:8005"))
# StatefulSet pods behind the headless service "edge" have stable names.
K8S_EDGES = (Backend("edge-0", "edge-0.edge:8004"), Backend("edge-1", "edge-1.edge:8004"))
# One upstream: the redirector Service spreads connections over however many pods the HPA runs.
K8S_REDIRECTORS = (Backend("redirector", "redirector:8010"),)

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
        K8S / "proxies" / "nginx.conf": render_nginx(K8S_REDIRECTORS, haproxy="haproxy:8081"),
        K8S / "prometheus" / "prometheus.yml": render_kubernetes(),
    }
    copies = dict(COPIES)
    for board in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        copies[K8S / "grafana" / "dashboards" / board.name] = board.relative_to(ROOT)
    files.update({target: (ROOT / source).read_text() for target, source in copies.items()})
    return files


def main(argv: Sequence[str] | None = None) -> None:
    """Write (with --write) or list the generated files that differ from their source."""
    parser = argparse.ArgumentParser(prog="python -m services.deploy_config")
    parser.add_argument("--write", action="store_true", help="write the files")
    args = parser.parse_args(argv)
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
