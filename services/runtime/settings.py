"""A process's settings, built once as it starts: settings that do not validate end it with
their reasons on stderr (status 1), not a traceback."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from shared.core.settings import BaseServiceSettings

S = TypeVar("S", bound=BaseServiceSettings)


def load_settings(settings_class: type[S], /, **overrides: Any) -> S:
    """Build ``settings_class`` from the environment, or exit naming every wrong setting."""
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        raise SystemExit(describe(exc, settings_class.__module__)) from None


def describe(exc: ValidationError, source: str) -> str:
    """The operator's message: one line per wrong setting, without any value."""
    lines = [f"invalid settings ({source}):"]
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name, *rest = [str(part) for part in error["loc"]] or [""]
        where = ".".join([name.upper(), *rest])
        message = error["msg"].removeprefix("Value error, ")
        for line in message.splitlines():
            lines.append(f"  {where}: {line}" if where else f"  {line}")
    return "\n".join(lines)
