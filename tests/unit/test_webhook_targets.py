"""Webhook targets: URLs and addresses the platform refuses to call, and how it connects."""

from __future__ import annotations

import ipaddress

import pytest

from shared.http.targets import (
    MAX_URL_CHARS,
    Target,
    TargetPolicy,
    TargetRefused,
    address_problem,
    parse_networks,
    parse_target,
    pinned,
    resolve_target,
)

STRICT = TargetPolicy()
LOCAL = TargetPolicy(allow_http=True, allowed_networks=parse_networks(["127.0.0.1/32"]))


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "10.255.255.255",
        "127.0.0.1",
        "127.8.9.10",
        "0.0.0.0",
        "169.254.169.254",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "198.18.0.1",
        "192.0.2.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "fc00::1",
        "fd12:3456:789a::1",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "100::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), STRICT) is not None


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), STRICT) is None


def test_allowed_networks_let_only_themselves_through() -> None:
    assert address_problem(ipaddress.ip_address("127.0.0.1"), LOCAL) is None
    assert address_problem(ipaddress.ip_address("::ffff:127.0.0.1"), LOCAL) is None
    assert address_problem(ipaddress.ip_address("127.0.0.2"), LOCAL) is not None
    assert address_problem(ipaddress.ip_address("::1"), LOCAL) is not None
    assert address_problem(ipaddress.ip_address("10.0.0.1"), LOCAL) is not None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook", "must be https"),
        ("ftp://example.com/hook", "must be https"),
        ("file:///etc/passwd", "must be https"),
        ("https://user:pass@example.com/hook", "credentials"),
        ("https://example.com@10.0.0.1/hook", "credentials"),
        ("https://@example.com/hook", "credentials"),
        ("https://example.com:0/hook", "port"),
        ("https://example.com:65536/hook", "port"),
        ("https://example.com:99999999/hook", "port"),
        ("https://example.com:-1/hook", "port"),
        ("https://example.com:8o/hook", "port"),
        ("https://2130706433/hook", "canonical IPv4"),
        ("https://0x7f000001/hook", "canonical IPv4"),
        ("https://0x7f.1/hook", "canonical IPv4"),
        ("https://0177.0.0.1/hook", "canonical IPv4"),
        ("https://127.1/hook", "canonical IPv4"),
        ("https://127.000.000.001/hook", "canonical IPv4"),
        ("https://017700000001/hook", "canonical IPv4"),
        ("https://10.0.0.1.5/hook", "canonical IPv4"),
        ("https:///hook", "no host"),
        ("https://exa mple.com/hook", "spaces"),
        ("https://example.com/ho\nok", "spaces"),
        ("https://[fe80::1%25eth0]/hook", "zone"),
        ("https://exämple.com/hook", "punycode"),
        ("https://-bad-.example.com/hook", "not a valid host"),
        ("https://example.com/hook#frag", "fragment"),
        ("https://example.com/" + "a" * MAX_URL_CHARS, "longer than"),
    ],
)
def test_malformed_and_evasive_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(TargetRefused, match=why):
        parse_target(url, STRICT)


def test_a_good_url_parses_with_its_port() -> None:
    target = parse_target("https://Hooks.Example.com/in?x=1", STRICT)
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 443)
    assert target.host_header == "hooks.example.com"
    local = parse_target("http://127.0.0.1:8080/in", LOCAL)
    assert (local.port, local.host_header) == (8080, "127.0.0.1:8080")
    v6 = parse_target("https://[2606:4700::1]:8443/", STRICT)
    assert (v6.host, v6.host_header) == ("2606:4700::1", "[2606:4700::1]:8443")


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1:8443/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:7f00:1]/hook",
        "https://[fc00::1]/hook",
        "https://100.64.0.1/hook",
        "https://localhost/hook",
        "https://LOCALHOST:8443/hook",
    ],
)
async def test_private_targets_are_refused_after_resolution(url: str) -> None:
    with pytest.raises(TargetRefused, match="resolves to"):
        await resolve_target(parse_target(url, STRICT), STRICT)


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(TargetRefused, match="does not resolve"):
        await resolve_target(parse_target("https://nothing.invalid/hook", STRICT), STRICT)
    # Loopback if the resolver knows the absolute name, unknown if not: refused either way.
    with pytest.raises(TargetRefused):
        await resolve_target(parse_target("https://localhost./hook", STRICT), STRICT)


async def test_an_allowed_local_receiver_resolves_to_its_address() -> None:
    target = parse_target("http://localhost:8080/hook", LOCAL)
    assert await resolve_target(target, LOCAL) == ipaddress.ip_address("127.0.0.1")


def test_the_request_goes_to_the_checked_address_under_the_name() -> None:
    target = Target("https://hooks.example.com/in?x=1", "https", "hooks.example.com", 443)
    url, headers, extensions = pinned(target, ipaddress.ip_address("93.184.215.14"))
    assert url == "https://93.184.215.14:443/in?x=1"
    assert headers == {"Host": "hooks.example.com"}
    assert extensions == {"sni_hostname": "hooks.example.com"}
    url, headers, extensions = pinned(
        Target("http://h.example:81", "http", "h.example", 81),
        ipaddress.ip_address("2606:4700::1"),
    )
    assert (url, headers, extensions) == ("http://[2606:4700::1]:81/", {"Host": "h.example:81"}, {})
