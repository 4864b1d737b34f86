"""The client address behind the platform's proxies: X-Forwarded-For read from the right."""

from __future__ import annotations

from shared.http.clients import MAX_HOPS, client_address

PROXIES = frozenset({"127.0.0.1", "10.0.0.5"})


def test_a_direct_client_is_its_peer_whatever_it_claims() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"
    assert client_address("203.0.113.9", None, PROXIES) == "203.0.113.9"
    assert client_address(None, None, PROXIES) == "unknown"


def test_behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", PROXIES) == "198.51.100.1"
    # Two proxies of ours, and a hop the client wrote itself on the left.
    chain = "6.6.6.6, 198.51.100.1, 10.0.0.5"
    assert client_address("127.0.0.1", chain, PROXIES) == "198.51.100.1"
    # Only our proxies in the chain: the farthest of them is all there is to go by.
    assert client_address("127.0.0.1", "10.0.0.5", PROXIES) == "10.0.0.5"
    assert client_address("127.0.0.1", "", PROXIES) == "127.0.0.1"
    assert client_address("127.0.0.1", " , ", PROXIES) == "unknown"


def test_a_long_chain_is_read_only_as_far_as_max_hops() -> None:
    chain = ", ".join(["10.0.0.5"] * (MAX_HOPS + 10))
    assert client_address("127.0.0.1", "198.51.100.1, " + chain, PROXIES) == "10.0.0.5"
