"""Every deployable HTTP service: where its app and settings live and its default port."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.core import ports


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port_setting: str
    default_port: int
    # "module:function" serving the service instead of uvicorn (given settings, host, port).
    runner: str | None = None
    # Served by Granian (HTTP/1.1, h2c and h2 over TLS) instead of uvicorn.
    http2: bool = False

    @property
    def package(self) -> str:
        return f"services.{self.name}"

    def settings_class(self) -> type[Any]:
        return importlib.import_module(f"{self.package}.settings").Settings  # type: ignore[no-any-return]

    def builder(self) -> Callable[..., Any]:
        return importlib.import_module(f"{self.package}.app").build  # type: ignore[no-any-return]

    def run_function(self) -> Callable[..., None] | None:
        if self.runner is None:
            return None
        module, name = self.runner.split(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("upload", "upload_port", ports.UPLOAD, http2=True),
        ServiceSpec(
            "chunked_upload",
            "chunked_upload_port",
            ports.CHUNKED_UPLOAD,
            runner="services.chunked_upload.serve:run",
        ),
        ServiceSpec("origin", "origin_port", ports.ORIGIN, runner="services.origin.serve:run"),
        ServiceSpec("edge", "edge_port", ports.EDGE, runner="services.edge.serve:run"),
        ServiceSpec(
            "balancer", "balancer_port", ports.BALANCER, runner="services.balancer.serve:run"
        ),
        ServiceSpec(
            "redirector",
            "redirector_port",
            ports.REDIRECTOR,
            runner="services.redirector.serve:run",
        ),
    )
}
