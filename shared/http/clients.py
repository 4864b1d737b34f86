"""Who is at the other end: the client's address, through the platform's own reverse proxies.

A request from one of ``TRUSTED_PROXIES`` names its client in ``X-Forwarded-For``, each proxy
appending the address it heard from; read from the right, the first address that is not a
trusted proxy is the client. Anything left of it was written by the client itself and proves
nothing, so a client cannot pick its own address to dodge a per-address limit. A request from
anywhere else is its own client, whatever its headers say.
"""

from __future__ import annotations

from starlette.requests import Request

# A longer header is not a chain any proxy of ours wrote: its last hop still counts.
MAX_HOPS = 32


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
