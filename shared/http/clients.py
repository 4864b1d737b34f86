"""Who is at the other end: the client's address, through the platform's own reverse proxies.

A request from one of ``TRUSTED_PROXIES`` names its client in ``X-Forwarded-For``, each proxy
appending the address it heard from; read from the right, the first address that is not a
trusted proxy is the client. Anything left of it was written by the client itself and proves
nothing, so a client cannot pick its own address to dodge a per-address limit. A request from
anywhere else is its own client, whatever its headers say.
"""

from __future__ import annotations

import re

from starlette.requests import Request

# A longer header is not a chain any proxy of ours wrote: its last hop still counts.
MAX_HOPS = 32

# What a Host may be: a name or an address, and a port. Anything else is not put into a URL.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def client_address(peer: str | None, forwarded_for: str | None, trusted: frozenset[str]) -> str:
    """The client's address, given the connection's peer and its ``X-Forwarded-For``."""
    address = peer or "unknown"
    if address not in trusted or not forwarded_for:
        return address
    for hop in reversed(forwarded_for.split(",")[-MAX_HOPS:]):
        address = hop.strip()
        if address not in trusted:
            return address or "unknown"
    return address


def request_client(request: Request, trusted: frozenset[str]) -> str:
    """The client address of a request (``client_address`` of its peer and header)."""
    peer = request.client.host if request.client else None
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


def forwarded_origin(request: Request, trusted: frozenset[str]) -> str | None:
    """``scheme://host[:port]`` the client asked for, when a trusted proxy in front says so.

    The front door (nginx) terminates TLS and names the scheme and host it was reached on in
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host``; URLs and links made for the client then
    point where the client can reach them. From anyone else these headers are ignored.
    """
    peer = request.client.host if request.client else None
    if peer not in trusted:
        return None
    host = request.headers.get("x-forwarded-host")
    scheme = request.headers.get("x-forwarded-proto")
    if scheme not in ("http", "https") or host is None or not _HOST.fullmatch(host):
        return None
    return f"{scheme}://{host}"


def public_base_url(request: Request, trusted: frozenset[str]) -> str:
    """The URL the client reached the app at, ending in ``/``: the front door's when the
    request came through it, else the request's own."""
    forwarded = forwarded_origin(request, trusted)
    return f"{forwarded}/" if forwarded else str(request.base_url)
