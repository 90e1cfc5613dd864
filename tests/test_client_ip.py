"""Client IP resolution: X-Forwarded-For is believed only as far as the trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farebox.api.client_ip import TrustedProxies

PROXIES = TrustedProxies(["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])


def test_no_proxies_ignores_forwarded_for() -> None:
    none = TrustedProxies([])
    assert not none
    assert none.client_ip("10.0.0.1", "203.0.113.7") == "10.0.0.1"
    assert none.client_ip("198.51.100.1", "203.0.113.7, 10.0.0.2") == "198.51.100.1"
    assert none.client_ip("::ffff:198.51.100.1", "203.0.113.7") == "198.51.100.1"
    assert none.client_ip("198.51.100.1", None) == "198.51.100.1"


def test_untrusted_peer_with_spoofed_header_is_the_peer() -> None:
    assert PROXIES.client_ip("198.51.100.1", "1.2.3.4") == "198.51.100.1"
    assert PROXIES.client_ip("198.51.100.1", "10.0.0.5, 127.0.0.1") == "198.51.100.1"
    assert PROXIES.client_ip("198.51.100.1", "garbage") == "198.51.100.1"


def test_trusted_peer_without_header_is_the_peer() -> None:
    assert PROXIES.client_ip("10.0.0.1", None) == "10.0.0.1"
    assert PROXIES.client_ip("10.0.0.1", "") == "10.0.0.1"


def test_trusted_peer_returns_rightmost_untrusted_entry() -> None:
    assert PROXIES.client_ip("10.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert PROXIES.client_ip("127.0.0.1", "198.51.100.9, 203.0.113.7") == "203.0.113.7"


def test_chain_of_trusted_proxies() -> None:
    xff = "203.0.113.7, 10.1.2.3, 10.4.5.6, 127.0.0.1"
    assert PROXIES.client_ip("10.0.0.1", xff) == "203.0.113.7"
    xff6 = "2001:db8::7, fd00::1, fd12:3456::9"
    assert PROXIES.client_ip("::1", xff6) == "2001:db8::7"


def test_client_injected_leftmost_entry_does_not_win() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; the proxy appended the real address.
    assert PROXIES.client_ip("10.0.0.1", "6.6.6.6, 203.0.113.7") == "203.0.113.7"
    # Injecting a trusted-looking address does not help either.
    assert PROXIES.client_ip("10.0.0.1", "10.9.9.9, 203.0.113.7") == "203.0.113.7"
    # Several header lines joined by ", ".
    assert PROXIES.client_ip("10.0.0.1", "6.6.6.6, 7.7.7.7, 203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("garbage", "10.0.0.1"),
        ("unknown", "10.0.0.1"),
        ("", "10.0.0.1"),
        ("  ", "10.0.0.1"),
        ("203.0.113.7,", "10.0.0.1"),
        ("203.0.113.7, unknown", "10.0.0.1"),
        # Garbage beyond a trusted hop: stop at that hop, never return anything further left.
        ("203.0.113.7, unknown, 10.2.2.2", "10.2.2.2"),
        ("203.0.113.7, , 10.2.2.2", "10.2.2.2"),
        ("6.6.6.6, garbage, 203.0.113.7", "203.0.113.7"),
        ("1.2.3.4.5", "10.0.0.1"),
        ("10.0.0.300", "10.0.0.1"),
        ("01.2.3.4", "10.0.0.1"),
        ("1.2.3.4:", "10.0.0.1"),
        ("1.2.3.4:99999", "10.0.0.1"),
        ("1.2.3.4:port", "10.0.0.1"),
        ("[1.2.3.4]", "10.0.0.1"),
        ("[2001:db8::1", "10.0.0.1"),
        ("[2001:db8::1]x", "10.0.0.1"),
        ("2001:db8::1]:443", "10.0.0.1"),
        ("<script>", "10.0.0.1"),
    ],
)
def test_garbage_entries_stop_the_walk(xff: str, expected: str) -> None:
    assert PROXIES.client_ip("10.0.0.1", xff) == expected


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("203.0.113.7:5678", "203.0.113.7"),
        ("  203.0.113.7:443  ", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("203.0.113.7, 10.1.1.1:8080", "203.0.113.7"),
        ("203.0.113.7, [fd00::5]:80", "203.0.113.7"),
    ],
)
def test_ports_are_stripped(xff: str, expected: str) -> None:
    assert PROXIES.client_ip("10.0.0.1", xff) == expected


def test_whitespace_around_entries() -> None:
    assert PROXIES.client_ip("10.0.0.1", "\t203.0.113.7 ,  10.3.3.3 ") == "203.0.113.7"


def test_ipv6_and_ipv4_mapped() -> None:
    assert PROXIES.client_ip("::1", "2001:0db8:0000:0000:0000:0000:0000:0001") == "2001:db8::1"
    assert PROXIES.client_ip("::1", "2001:DB8::A") == "2001:db8::a"
    assert PROXIES.client_ip("::1", "::ffff:203.0.113.7") == "203.0.113.7"
    # An IPv4-mapped peer inside a trusted IPv4 range is trusted.
    assert PROXIES.client_ip("::ffff:10.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert PROXIES.client_ip("::ffff:198.51.100.1", "203.0.113.7") == "198.51.100.1"
    # A mapped entry inside a trusted range is skipped.
    assert PROXIES.client_ip("10.0.0.1", "203.0.113.7, ::ffff:10.5.5.5") == "203.0.113.7"
    # Untrusted IPv6 peer is returned compressed.
    assert PROXIES.client_ip("2001:db8:0:0::1", "203.0.113.7") == "2001:db8::1"


def test_cidr_membership() -> None:
    assert PROXIES.is_trusted("10.255.255.255")
    assert PROXIES.is_trusted("10.0.0.0")
    assert not PROXIES.is_trusted("11.0.0.0")
    assert not PROXIES.is_trusted("9.255.255.255")
    assert PROXIES.is_trusted("127.0.0.1")
    assert not PROXIES.is_trusted("127.0.0.2")
    assert PROXIES.is_trusted("::1")
    assert PROXIES.is_trusted("fdff:ffff::1")
    assert not PROXIES.is_trusted("fe00::1")
    assert not PROXIES.is_trusted("garbage")
    narrow = TrustedProxies(["192.168.1.16/28", "2001:db8:1::/48"])
    assert narrow.client_ip("192.168.1.31", "203.0.113.7") == "203.0.113.7"
    assert narrow.client_ip("192.168.1.32", "203.0.113.7") == "192.168.1.32"
    assert narrow.client_ip("192.168.1.15", "203.0.113.7") == "192.168.1.15"
    assert narrow.client_ip("2001:db8:1:ffff::1", "203.0.113.7") == "203.0.113.7"
    assert narrow.client_ip("2001:db8:2::1", "203.0.113.7") == "2001:db8:2::1"


def test_ipv4_mapped_config_entry_matches_ipv4() -> None:
    mapped = TrustedProxies(["::ffff:10.0.0.0/104", "::ffff:192.0.2.1"])
    assert mapped.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1"),
    )
    assert mapped.client_ip("10.1.1.1", "203.0.113.7") == "203.0.113.7"
    assert mapped.client_ip("192.0.2.1", "203.0.113.7") == "203.0.113.7"


@pytest.mark.parametrize(
    "entry",
    ["10.0.0.300/8", "not-an-ip", "", "10.0.0.0/33", "fd00::/129", "1.2.3.4:80", "10.0.0.0/8/8"],
)
def test_invalid_config_entry_raises(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies") as info:
        TrustedProxies(["127.0.0.1", entry])
    assert repr(entry) in str(info.value)


def test_invalid_config_message() -> None:
    with pytest.raises(ValueError) as info:
        TrustedProxies(["10.0.0.300/8"])
    assert str(info.value) == (
        "trusted_proxies: '10.0.0.300/8' is not an IP address or CIDR network"
    )


def test_host_bits_set_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8' has host bits set.*'10\.0\.0\.0/8'"):
        TrustedProxies(["10.0.0.1/8"])


def test_string_instead_of_list_is_rejected() -> None:
    with pytest.raises(TypeError):
        TrustedProxies("10.0.0.0/8")


def test_config_entries_may_carry_whitespace() -> None:
    assert TrustedProxies([" 10.0.0.0/8 "]).client_ip("10.0.0.1", "203.0.113.7") == "203.0.113.7"


def test_all_entries_trusted_returns_leftmost() -> None:
    assert PROXIES.client_ip("10.0.0.1", "10.0.0.9, 127.0.0.1, 10.0.0.8") == "10.0.0.9"
    assert PROXIES.client_ip("::1", "fd00::9, ::1") == "fd00::9"


def test_none_and_non_ip_peer() -> None:
    assert PROXIES.client_ip(None, "203.0.113.7") is None
    assert PROXIES.client_ip(None, None) is None
    assert TrustedProxies([]).client_ip(None, "203.0.113.7") is None
    assert PROXIES.client_ip("/run/farebox.sock", "203.0.113.7") == "/run/farebox.sock"
    assert TrustedProxies([]).client_ip("/run/farebox.sock", "1.2.3.4") == "/run/farebox.sock"
    assert PROXIES.client_ip("", "203.0.113.7") == ""


def test_repeated_calls_are_consistent() -> None:
    # The caches must not change answers.
    for _ in range(3):
        assert PROXIES.client_ip("10.0.0.1", "6.6.6.6, 203.0.113.7") == "203.0.113.7"
        assert PROXIES.client_ip("198.51.100.1", "6.6.6.6") == "198.51.100.1"


_ipv4 = st.ip_addresses(v=4)
_ipv6 = st.ip_addresses(v=6)
_untrusted_peer = (
    st.one_of(_ipv4, _ipv6)
    .filter(lambda a: not PROXIES.is_trusted(str(a)))
    .flatmap(
        lambda a: st.sampled_from(
            [str(a), a.exploded, f"::ffff:{a}" if a.version == 4 else f"[{a}]"]
        )
    )
)
_entry = st.one_of(
    _ipv4.map(str),
    _ipv6.map(str),
    st.sampled_from(["10.0.0.1", "127.0.0.1", "::1", "fd00::1", "unknown", "", " "]),
    st.text(max_size=20),
)
_header = st.one_of(st.none(), st.text(), st.lists(_entry, max_size=8).map(", ".join))


@given(peer=_untrusted_peer, header=_header)
def test_untrusted_peer_always_wins(peer: str, header: str | None) -> None:
    expected = str(ipaddress.ip_address(peer.strip("[]")))
    mapped = ipaddress.ip_address(expected)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        expected = str(mapped.ipv4_mapped)
    assert PROXIES.client_ip(peer, header) == expected
    assert TrustedProxies([]).client_ip(peer, header) == expected


@given(header=_header)
def test_result_is_never_garbage(header: str | None) -> None:
    # Behind a trusted proxy the answer is always a valid, normalised IP.
    result = PROXIES.client_ip("10.0.0.1", header)
    assert result is not None
    assert str(ipaddress.ip_address(result)) == result
