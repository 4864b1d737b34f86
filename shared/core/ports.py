"""Every process's default port: the one table that services, ``vsp up``, renderers and tests read.

Compose, Kubernetes and the local suite all listen on these; a deployment changes a port through
the service's own ``*_PORT`` setting, never by editing a second table.
"""

from __future__ import annotations

from typing import Final

UPLOAD: Final = 8001
UPLOAD_TLS: Final = 8441
CHUNKED_UPLOAD: Final = 8002
ORIGIN: Final = 8003
EDGES: Final = (8004, 8005)
EDGE: Final = EDGES[0]
REDIRECTORS: Final = (8010, 8011, 8012, 8013)
REDIRECTOR: Final = REDIRECTORS[0]
BALANCER: Final = 8090
WORKERS: Final = {"push": 9101, "pull": 9102}
WORKER_METRICS: Final = WORKERS["push"]
NGINX_REDIRECT: Final = 8080
# The front door (nginx): one host for pages, APIs, tus and streams.
FRONT_HTTP: Final = 8000
FRONT_HTTPS: Final = 8443
HAPROXY: Final = 8081
PROMETHEUS: Final = 9090
RABBITMQ_METRICS: Final = 15692


def local_url(port: int) -> str:
    """``http://127.0.0.1:<port>``: where a local default service answers."""
    return f"http://127.0.0.1:{port}"
