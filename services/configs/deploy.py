"""Configuration files the deployments carry, rendered from the one place each is defined.

Kustomize reads files only from under its own folder, and compose names containers where
``vsp up`` names 127.0.0.1 ports, so both get renderings (or copies) of the repository's
configs. ``python -m services.configs.deploy --write`` refreshes them; a test fails when they
drift.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from services.configs.prometheus import render_kubernetes
from services.configs.proxies import Backend, render_haproxy, render_nginx
from shared.core import ports

ROOT = Path(__file__).resolve().parents[2]
K8S = Path("deploy/k8s")
COMPOSE = Path("deploy/compose")

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


def main(argv: Sequence[str] | None = None) -> None:
    """Write (with --write) or list the generated files that differ from their source."""
    parser = argparse.ArgumentParser(prog="python -m services.configs.deploy")
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
