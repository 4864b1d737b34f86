"""Serve the balancer: the lean proxy listener in front, the app on a private Unix socket.

uvicorn runs the app (lifespan, the dashboard's WebSocket, stats, metrics) on a Unix socket only
this process knows; the public port belongs to ``front``, which proxies viewer requests itself
and relays the rest to the app. Both share one event loop (uvloop) and one ``Balancer``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time

import uvicorn
import uvloop
from fastapi import FastAPI

from services.balancer.app import build, own_paths
from services.balancer.front import Front
from services.balancer.service import Balancer
from services.balancer.settings import Settings
from services.balancer.upstream import Address
from shared.runtime.servers import KEEP_ALIVE_SECONDS

BACKLOG = 2048


class BalancerServer(uvicorn.Server):
    """uvicorn for the app, plus the public listener opened after the app has started and
    closed before the app shuts down."""

    def __init__(
        self,
        app: FastAPI,
        config: uvicorn.Config,
        control: str,
        host: str,
        port: int,
        settings: Settings,
    ):
        super().__init__(config)
        self.app = app
        self.settings = settings
        self.control = control
        self.host = host
        self.port = port
        self.front: Front | None = None
        self.listener: asyncio.Server | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        app = self.app
        balancer: Balancer = app.state.balancer
        self.front = Front(
            balancer.proxy,
            balancer.connections,
            Address(unix_path=self.control),
            own_paths(app),
            self.settings.http_limits,
        )
        self.listener = await self.front.listener.open(
            self.front.protocol, self.host, self.port, backlog=BACKLOG
        )

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0 and self.front is not None:
            self.front.connections.sweep(time.monotonic())
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.front is not None:
            # Responses under way may finish (as long as uvicorn waits for its own).
            await self.front.listener.drain(self.config.timeout_graceful_shutdown or 0)
        await super().shutdown(sockets)


async def serve(settings: Settings, host: str, port: int) -> None:
    # An abstract-namespace socket (Linux): nothing on disk to clean up, however the process ends.
    control = f"\0vsp-balancer-{os.getpid()}-{secrets.token_hex(4)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(control)
    listener.listen(BACKLOG)
    app = build(settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    await BalancerServer(app, config, control, host, port, settings).serve(sockets=[listener])


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    uvloop.run(serve(settings, host, port))
