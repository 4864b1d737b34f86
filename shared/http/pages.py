"""What the browser pages share: links from one service's page to another service's."""

from __future__ import annotations

import html

from fastapi import Request


def page_url(request: Request, configured: str | None, port: int, path: str) -> str:
    """``configured``, or else ``path`` at ``port`` of the host ``request`` came to: where a
    local suite (every service on its default port of one host) serves that page."""
    if configured:
        return configured
    host = request.url.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{port}{path}"


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{{name}}`` replaced by its value, escaped for an attribute."""
    for name, value in values.items():
        mark = "{{" + name + "}}"
        if mark not in template:
            raise RuntimeError(f"the page lost its {mark} placeholder")
        template = template.replace(mark, html.escape(value, quote=True))
    return template
