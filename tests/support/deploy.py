"""The deployment files' tests: what a `vsp` command line runs, reads and listens on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import typer

from services.cli.main import app
from services.runtime.registry import SERVICES
from shared.core.settings import BaseServiceSettings

_CLI: Any = typer.main.get_command(app)


@dataclass(frozen=True)
class VspCommand:
    """A parsed `vsp` command line."""

    name: str  # serve, worker, migrate, ...
    params: dict[str, Any]

    @property
    def role(self) -> str:
        """The service name for `serve`, `worker-<mode>` for workers, else the command."""
        if self.name == "serve":
            return str(self.params["name"])
        if self.name == "worker":
            return f"worker-{self.params['mode']}"
        return self.name

    def settings_class(self) -> type[BaseServiceSettings]:
        if self.name == "serve":
            return SERVICES[self.params["name"]].settings_class()  # type: ignore[no-any-return]
        if self.name == "worker":
            from services.transcoder.settings import Settings

            return Settings
        return BaseServiceSettings

    def port(self, env: dict[str, str]) -> int | None:
        """The port the process listens on with ``env``: HTTP, or a worker's /metrics."""
        if self.name == "serve":
            if self.params.get("port"):
                return int(self.params["port"])
            spec = SERVICES[self.params["name"]]
            return int(env.get(spec.port_setting.upper(), spec.default_port))
        if self.name == "worker":
            if self.params.get("metrics_port") is not None:
                return int(self.params["metrics_port"])
            return int(env.get("TRANSCODER_METRICS_PORT", 9101))
        return None


def parse_vsp(args: list[str]) -> VspCommand:
    """Parse ``args`` (without the leading ``vsp``) as the CLI would, without running it."""
    assert args, "empty vsp command"
    command = _CLI.commands.get(args[0])
    assert command is not None, f"vsp has no command {args[0]!r}: {sorted(_CLI.commands)}"
    ctx = command.make_context(args[0], list(args[1:]))
    parsed = VspCommand(args[0], dict(ctx.params))
    if parsed.name == "serve":
        assert parsed.params["name"] in SERVICES, f"vsp serve: no service {parsed.params['name']!r}"
    if parsed.name == "worker":
        assert parsed.params["mode"] in ("push", "pull"), parsed.params
    return parsed


def unknown_env(settings: type[BaseServiceSettings], names: list[str]) -> list[str]:
    """Names that map to no field of ``settings`` (pydantic-settings matches case-insensitively)."""
    fields = set(settings.model_fields)
    return [name for name in names if name.lower() not in fields]


def all_settings_fields() -> set[str]:
    """Every field of every service's settings, upper-cased as environment variables."""
    from services.transcoder.settings import Settings as TranscoderSettings

    classes = [spec.settings_class() for spec in SERVICES.values()]
    classes += [TranscoderSettings, BaseServiceSettings]
    return {name.upper() for cls in classes for name in cls.model_fields}


URL_HOST_PORT = re.compile(r"https?://([A-Za-z0-9.-]+):(\d+)")
