"""What the browser pages share: links from one service's page to another service's."""

from __future__ import annotations

import html

from fastapi import Request

from shared.http.clients import forwarded_origin


def page_url(
    request: Request, configured: str | None, port: int, path: str, trusted: frozenset[str]
) -> str:
    """``configured``; else, for a request through the front door (which serves every page on
    its one host), ``path`` itself; else ``path`` at ``port`` of the host ``request`` came to:
    where a local suite (every service on its default port of one host) serves that page."""
    if configured:
        return configured
    if forwarded_origin(request, trusted):
        return path
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
