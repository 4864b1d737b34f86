"""Webhook receivers for tests: a real HTTP server on 127.0.0.1 that keeps every request, and
the verification procedure docs/WEBHOOKS.md gives receivers, run as written there."""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.paths import ROOT
from tests.support.ports import free_port

DOC = ROOT / "docs" / "WEBHOOKS.md"


def documented_verify() -> Callable[[str, Any, bytes], bool]:
    """``verify(secret, headers, body)`` from the Python snippet of docs/WEBHOOKS.md."""
    snippets = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(snippets) == 1, "docs/WEBHOOKS.md should hold one Python snippet"
    namespace: dict[str, Any] = {}
    exec(compile(snippets[0], str(DOC), "exec"), namespace)
    verify: Callable[[str, Any, bytes], bool] = namespace["verify"]
    return verify


@dataclass
class Received:
    path: str
    headers: httpx.Headers  # looked up case-insensitively, as a receiver's framework does
    body: bytes


@dataclass
class Receiver:
    """Every request received, and the statuses to answer per path (then 204)."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    # path -> statuses answered to its first requests, in order.
    failures: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = httpx.Headers(list(self.headers.items()))
            with receiver.lock:
                receiver.requests.append(Received(self.path, headers, body))
                planned = receiver.failures.get(self.path, [])
                status = planned.pop(0) if planned else 204
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("location", "/elsewhere")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_receiver(certificate: tuple[Path, Path] | None = None) -> Iterator[Receiver]:
    """A receiver on a port of its own, ``receiver.url`` its base URL, until the block ends;
    HTTPS with ``certificate`` (certificate and key files)."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(receiver))
    if certificate is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if certificate else "http"
    receiver.url = f"{scheme}://127.0.0.1:{server.server_port}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
