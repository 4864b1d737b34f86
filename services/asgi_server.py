"""Run a service's ASGI app under Granian (the default for hot paths) or uvicorn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.serve import KEEP_ALIVE_SECONDS
from shared.logging import configure_logging
from shared.settings import BaseServiceSettings


def granian_factory(
    service: str, settings_class: type[BaseServiceSettings], build: Callable[[Any], Any]
) -> Any:
    """What Granian's worker process calls: logging, settings, then the app."""
    settings = settings_class()
    configure_logging(service, settings.log_level, json_lines=settings.log_json)
    return build(settings)


def run(
    settings: BaseServiceSettings,
    *,
    server: str,
    factory: str,
    build: Callable[[Any], Any],
    host: str,
    port: int,
    **granian_options: Any,
) -> None:
    """Serve until SIGINT/SIGTERM; ``factory`` is the ``module:function`` Granian imports."""
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            build(settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        return
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # ``interface`` may name RSGI for apps that speak it (the edge).
    options: dict[str, Any] = {
        "runtime_threads": 1,
        "interface": Interfaces.ASGI,
        **granian_options,
    }
    Granian(
        factory,
        factory=True,
        address=host,
        port=port,
        workers=1,
        loop=Loops.uvloop,
        websockets=False,
        backlog=2048,
        log_access=False,
        # A stop asked for while the worker still starts is otherwise waited on forever.
        workers_kill_timeout=5,
        **options,
    ).serve()
