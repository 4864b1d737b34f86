"""URLs an account asks the platform to call (webhooks), kept off the platform's own network.

A target is checked twice: its URL's syntax (``parse_target``: scheme, no credentials, a real
port, a host that is a name or a canonical address, never ``0x7f.1``, ``2130706433`` or
``0177.0.0.1``, which resolvers read as 127.0.0.1), then every address its host resolves to
(``resolve_target``): loopback, private, link-local (169.254.169.254, the cloud metadata
address), CGNAT, multicast, reserved and documentation ranges, IPv6 ULA and site-local, and
IPv4 hidden in IPv6 (mapped ``::ffff:a.b.c.d``, NAT64, 6to4) are refused unless an operator
allows their network. The caller connects to the address that was checked (``pinned``), so a
name cannot resolve to a public address for the check and to a private one for the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS = 2048
MAX_HOST_CHARS = 253
RESOLVE_TIMEOUT_SECONDS = 3.0

# Refused on top of what ``ipaddress`` calls private, reserved or not global.
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/8",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",  # unique local
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# A host whose last label is a number is an IPv4 address to browsers and resolvers alike.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class TargetRefused(ValueError):
    """The URL or one of its addresses may not be called; the message says why."""


@dataclass(frozen=True)
class TargetPolicy:
    """What may be called: ``http`` besides ``https`` (local use), and networks let through."""

    allow_http: bool = False
    allowed_networks: Sequence[IPNetwork] = field(default_factory=tuple)


@dataclass(frozen=True)
class Target:
    """A URL that passed the syntax checks."""

    url: str
    scheme: str
    host: str  # lowercase; an IPv6 address without brackets
    port: int

    @property
    def host_header(self) -> str:
        """The ``Host`` the target expects: its name, and its port unless the default one."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_host(host: str) -> None:
    if "%" in host:
        raise TargetRefused("IPv6 zone identifiers are not allowed")
    if _literal(host) is not None:
        return
    if not host.isascii():
        raise TargetRefused("the host must be ASCII: use its punycode (xn--) form")
    name = host.removesuffix(".")
    if not name or len(name) > MAX_HOST_CHARS:
        raise TargetRefused("the host name is empty or too long")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise TargetRefused(
            f"{host!r} is not a canonical IPv4 address: write it as four decimal numbers"
        )
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise TargetRefused(f"{host!r} is not a valid host name")


def parse_target(url: str, policy: TargetPolicy) -> Target:
    """The target ``url`` names, or TargetRefused saying what is wrong with it."""
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise TargetRefused("the URL holds spaces or control characters")
    parts = urlsplit(url)
    schemes = ("https", "http") if policy.allow_http else ("https",)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise TargetRefused(f"the URL must be {' or '.join(schemes)}")
    if "@" in parts.netloc:
        raise TargetRefused("credentials (user:password@) are not allowed in the URL")
    if parts.fragment:
        raise TargetRefused("the URL may not hold a fragment (#...)")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("the URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise TargetRefused("the URL's port is not a number from 1 to 65535") from None
    if port == 0:
        raise TargetRefused("the URL's port is not a number from 1 to 65535")
    _check_host(host)
    return Target(
        url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80)
    )


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_problem(ip: IPAddress, policy: TargetPolicy) -> str | None:
    """Why ``ip`` may not be called (completing "the address ..."), or None when it may."""
    if any(ip in network for network in policy.allowed_networks):
        return None
    inner = _embedded_ipv4(ip)
    if inner is not None:
        problem = address_problem(inner, policy)
        return f"{ip} carries {inner}, which {problem}" if problem else None
    if any(ip in network for network in BLOCKED_NETWORKS):
        return f"{ip} is in a private, loopback, link-local or reserved range"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return f"{ip} is not a public unicast address"
    return None


async def resolve_target(
    target: Target, policy: TargetPolicy, *, timeout_seconds: float = RESOLVE_TIMEOUT_SECONDS
) -> IPAddress:
    """The address to connect to: the first the host resolves to, once every one is allowed.

    TargetRefused when the host does not resolve or any of its addresses is refused.
    """
    literal = _literal(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_seconds):
                infos = await loop.getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except (OSError, TimeoutError) as exc:
            raise TargetRefused(f"{target.host} does not resolve: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise TargetRefused(f"{target.host} does not resolve")
    for ip in addresses:
        problem = address_problem(ip, policy)
        if problem:
            raise TargetRefused(f"{target.host} resolves to {problem}")
    return addresses[0]


def pinned(target: Target, ip: IPAddress) -> tuple[str, dict[str, str], dict[str, str]]:
    """URL, headers and httpx extensions of a request to ``target`` sent to ``ip`` itself.

    The name stays in ``Host`` and in TLS (SNI and certificate check), so the peer sees an
    ordinary request for its name.
    """
    parts = urlsplit(target.url)
    address = f"[{ip}]" if ip.version == 6 else str(ip)
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    url = f"{target.scheme}://{address}:{target.port}{path}{query}"
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return url, {"Host": target.host_header}, extensions


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings as networks (ValueError for one that is not)."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)
