"""Which IP address a request comes from, for per-IP rate limiting.

``X-Forwarded-For`` is written by whoever sent the request, so it is only believed as far as the
chain of proxies we trust. The rules, given the socket peer and the raw header value:

* No trusted proxies configured, or the peer is not one of them: the answer is the peer. The
  header is ignored entirely, because anything in it may have been made up by the client.
* The peer is a trusted proxy: walk the header from right to left (each proxy *appends* the
  address it received the request from). Entries that are themselves trusted proxies are
  skipped; the first untrusted entry is the client.
* An entry that is not an IP address (garbage, empty, ``unknown``) stops the walk; the answer is
  the last hop that was valid (the peer, or the trusted entry just to the right). A value the
  client could have written is never returned.
* Every entry is trusted: the answer is the leftmost entry.

Entries may carry surrounding whitespace, an IPv4 address may carry a port (``1.2.3.4:5678``),
and an IPv6 address may be bracketed with an optional port (``[2001:db8::1]:443``). Addresses
are normalised: IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes ``1.2.3.4``, IPv6 is written in
compressed form. A peer that is not an IP address at all (a unix socket path, ``None``) is
returned exactly as given.

Trusted proxies are IPs or CIDR networks, IPv4 or IPv6. Parsing and membership checks are cached,
since they run on every request.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

__all__ = ["TrustedProxies", "request_client_ip", "request_device", "request_host"]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Bounded: header entries come from clients, so an unbounded cache would be a memory leak.
_CACHE_SIZE = 4096
_MAX_PORT = 65535


def _strip_port(text: str) -> str | None:
    """The host part of ``text`` (already stripped), or None when it is malformed."""
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None
        rest = text[end + 1 :]
        if rest and not _is_port(rest[1:] if rest.startswith(":") else ""):
            return None
        host = text[1:end]
        # Brackets are for IPv6 only.
        return host if ":" in host else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host if _is_port(port) else None
    return text


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= _MAX_PORT


def _unmap(addr: IPAddress) -> IPAddress:
    if isinstance(addr, IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return mapped
    return addr


@lru_cache(maxsize=_CACHE_SIZE)
def _parse_ip(raw: str) -> IPAddress | None:
    """A header entry or peer address as an IP, or None when it is not one."""
    host = _strip_port(raw.strip())
    if not host:
        return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    return _unmap(addr)


@lru_cache(maxsize=_CACHE_SIZE)
def _normalise(raw: str) -> str | None:
    addr = _parse_ip(raw)
    return None if addr is None else str(addr)


def _parse_network(entry: str) -> IPNetwork:
    text = entry.strip() if isinstance(entry, str) else ""
    try:
        net = ipaddress.ip_network(text, strict=True) if text else None
    except ValueError as exc:
        loose: IPNetwork | None
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            loose = None
        if loose is not None:
            raise ValueError(
                f"trusted_proxies: {entry!r} has host bits set (did you mean {str(loose)!r}?)"
            ) from exc
        net = None
    if net is None:
        raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR network")
    # ::ffff:a.b.c.d/N with N >= 96 covers IPv4-mapped addresses, which we compare as IPv4.
    if isinstance(net, IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, net.prefixlen - 96))
    return net


class _Matcher:
    """Membership of an address in a fixed set of networks, for one IP version."""

    __slots__ = ("hosts", "nets")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.hosts: set[int] = set()
        self.nets: list[tuple[int, int]] = []
        for net in networks:
            if net.num_addresses == 1:
                self.hosts.add(int(net.network_address))
            else:
                self.nets.append((int(net.network_address), int(net.netmask)))
        # Widest first: the broadest ranges are the likeliest to match.
        self.nets.sort(key=lambda pair: pair[1])

    def __contains__(self, value: int) -> bool:
        if value in self.hosts:
            return True
        return any(value & mask == base for base, mask in self.nets)


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` we believe, and the client IP that follows."""

    __slots__ = ("_networks", "_v4", "_v6", "_classify")

    def __init__(self, entries: Iterable[str] = ()) -> None:
        if isinstance(entries, str):
            raise TypeError("trusted_proxies must be a list of IPs or CIDR networks, not a string")
        networks = tuple(_parse_network(entry) for entry in entries)
        self._networks = networks
        self._v4 = _Matcher(n for n in networks if isinstance(n, IPv4Network))
        self._v6 = _Matcher(n for n in networks if isinstance(n, IPv6Network))
        self._classify = lru_cache(maxsize=_CACHE_SIZE)(self._classify_uncached)

    @property
    def networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """The parsed trusted networks (IPv4-mapped IPv6 ranges given as IPv4)."""
        return self._networks

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks]!r})"

    def _trusted(self, addr: IPAddress) -> bool:
        matcher = self._v4 if addr.version == 4 else self._v6
        return int(addr) in matcher

    def _classify_uncached(self, raw: str) -> tuple[str | None, bool]:
        addr = _parse_ip(raw)
        if addr is None:
            return None, False
        return str(addr), self._trusted(addr)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (an IP, optionally with a port) is a trusted proxy."""
        return self._classify(address)[1]

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client IP of a request from socket peer ``peer`` with ``X-Forwarded-For`` header
        ``forwarded_for`` (see the module docstring for the rules)."""
        if peer is None:
            return None
        if not self._networks:
            normalised = _normalise(peer)
            return peer if normalised is None else normalised
        result, trusted = self._classify(peer)
        if result is None:
            return peer
        if not trusted or not forwarded_for:
            return result
        for raw in reversed(forwarded_for.split(",")):
            hop, trusted = self._classify(raw)
            if hop is None:
                return result
            result = hop
            if not trusted:
                break
        return result


def request_client_ip(proxies: TrustedProxies, scope: Mapping[str, Any]) -> str | None:
    """The client IP of an ASGI request. Every ``X-Forwarded-For`` line counts (joined in
    order), so a client's own extra line cannot hide behind the proxy's."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if not proxies:
        return proxies.client_ip(peer, None)
    lines = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"]
    return proxies.client_ip(peer, ", ".join(lines) if lines else None)


def request_host(proxies: TrustedProxies, scope: Mapping[str, Any]) -> str | None:
    """The host an ASGI request was sent to: its ``Host`` header, or, when the socket peer is
    a trusted proxy that sent ``X-Forwarded-Host``, that header's last (the nearest proxy's)
    value. From anyone else ``X-Forwarded-Host`` is ignored: a client could write anything."""
    headers = scope["headers"]
    if proxies:
        client = scope.get("client")
        if client and proxies.is_trusted(str(client[0])):
            forwarded = [v for k, v in headers if k.lower() == b"x-forwarded-host"]
            if forwarded:
                return forwarded[-1].decode("latin-1").rpartition(",")[2].strip() or None
    for name, value in headers:
        if name.lower() == b"host":
            return str(value.decode("latin-1"))
    return None


MAX_DEVICE_CHARS = 256  # a longer X-Farebox-Device is kept as its SHA-256


def request_device(proxies: TrustedProxies, scope: Mapping[str, Any]) -> str | None:
    """``X-Farebox-Device``, the SaaS's fingerprint of the client's device, when the socket
    peer is a trusted proxy (the SaaS's edge sets it; from anyone else a client could write
    any value). The last line counts (the nearest proxy's). It adds a client for account
    multiplication and never replaces the IP for a rate limit: a proxy that passes client
    headers on lets the client write it."""
    if not proxies:
        return None
    client = scope.get("client")
    if not client or not proxies.is_trusted(str(client[0])):
        return None
    found = [v for k, v in scope["headers"] if k.lower() == b"x-farebox-device"]
    value = found[-1].decode("latin-1").strip() if found else ""
    if not value:
        return None
    if len(value) > MAX_DEVICE_CHARS:
        return hashlib.sha256(value.encode("latin-1")).hexdigest()
    return value
