"""Callback address guard: webhooks only go to public addresses (SSRF protection).

Two layers:

* `check_callback_url` runs when a payment is created (the API answers 400 on failure).
* `guarded_session` is what the webhook dispatcher sends with (through
  `outbound.bounded_request`, which bounds each attempt). Its connections resolve the host
  themselves, refuse any non-public address and check `getpeername()` of the socket they
  actually connected, so a DNS answer that changed after creation (DNS rebinding) cannot
  reach an internal service. TLS still verifies the certificate and sends SNI for the
  hostname: only the socket is made here, urllib3 wraps it as usual.

`allow_private=True` (ALLOW_PRIVATE_CALLBACKS) skips every address check, keeping only the
scheme and host syntax checks.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import Any

import requests
from urllib3.connection import HTTPConnection
from urllib3.exceptions import NewConnectionError

from infra.outbound import Resolver, SocketOpener, deadline_session
from infra.outbound import resolve as bounded_resolve
from infra.urls import CallbackUrlError, IPAddress, parse_ip, split_callback_url

logger = logging.getLogger(__name__)


# How long a payment creation waits for the callback host's DNS answer.
CREATION_LOOKUP_SECONDS = 5.0
# Ranges the ipaddress flags miss or that older Pythons classify differently, with the reason shown.
BLOCKED_NETWORKS = {
    ipaddress.ip_network(net): reason
    for net, reason in (
        ("0.0.0.0/8", "'this network'"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("198.18.0.0/15", "benchmarking"),
        ("240.0.0.0/4", "reserved"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("fc00::/7", "unique-local"),
        ("fec0::/10", "site-local"),
    )
}
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# Digits, dots and hex markers only: what inet_aton may read as a (decimal, octal, hex) IPv4 address.
NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")


@dataclass(frozen=True)
class PrivateCallbacks:
    """Which callback URLs may reach a private address: every one (ALLOW_PRIVATE_CALLBACKS), or only these URLs (on
    the sandbox network the service's own inbox, which the composition root plugs in). At creation and at delivery
    alike."""

    allow_all: bool = False
    urls: frozenset[str] = frozenset()

    def allows(self, url: str) -> bool:
        return self.allow_all or url in self.urls


# --- addresses ---------------------------------------------------------------------------------

def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = non_public_reason(inner)
            return f"embeds {inner}, which is {reason}" if reason else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
    )
    named = next((name for name, hit in checks if hit), None)
    blocked = next((why for net, why in BLOCKED_NETWORKS.items() if ip.version == net.version and ip in net), None)
    if named or blocked:
        return named or blocked
    if ip.is_private:
        return "private"
    return None if ip.is_global else "not globally routable"


def literal_address(host: str) -> IPAddress | None:
    """The address a numeric host names, including forms like 2130706433 and 0x7f.1."""
    ip = parse_ip(host)
    if ip is not None or not NUMERIC_HOST.match(host):
        return ip
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_address(ip: IPAddress | str, host: str) -> None:
    address = parse_ip(ip) if isinstance(ip, str) else ip
    if address is None:
        raise CallbackUrlError(f"{host} resolves to {ip!r}, which is not an IP address")
    reason = non_public_reason(address)
    if reason:
        shown = host if host == str(address) else f"{host} ({address})"
        raise CallbackUrlError(f"{shown} is not a public address: {reason}")


def lookup(host: str, port: int, resolver: Resolver, wait: float | None) -> list[tuple[Any, ...]]:
    """getaddrinfo answers for host:port within `wait` seconds; CallbackUrlError when it does not resolve."""
    try:
        infos = bounded_resolve(resolver, host, port, wait)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackUrlError(f"host {host} does not resolve ({exc})") from None
    if not infos:
        raise CallbackUrlError(f"host {host} does not resolve")
    return infos


def check_infos(infos: list[tuple[Any, ...]], host: str) -> None:
    literal = literal_address(host)
    if literal is not None:
        check_address(literal, host)
    for info in infos:
        check_address(str(info[4][0]), host)


def check_callback_url(url: str, *, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> None:
    """Raise CallbackUrlError unless `url` is http(s) with a host whose every address is public."""
    host, port = split_callback_url(url)
    if allow_private:
        return
    literal = literal_address(host)
    if literal is not None:
        check_address(literal, host)
    try:
        infos = lookup(host, port, resolver, CREATION_LOOKUP_SECONDS)
    except OSError as exc:  # a resolver that timed out or failed: the address cannot be vouched for
        raise CallbackUrlError(f"host {host} does not resolve ({exc})") from None
    check_infos(infos, host)


# --- delivery-time enforcement -----------------------------------------------------------------

class AddressGuard(SocketOpener):
    """Resolves and connects for the guarded connections below; checks unless private is allowed."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> None:
        super().__init__(resolver)
        self.allow_private = allow_private

    def addresses(self, host: str, port: int, wait: float | None) -> list[tuple[Any, ...]]:
        infos = lookup(host, port, self.resolver, wait)
        if not self.allow_private:
            check_infos(infos, host)
        return infos

    def check_peer(self, sock: socket.socket, host: str) -> None:
        if not self.allow_private:
            check_address(str(sock.getpeername()[0]), host)

    def new_connection(self, conn: HTTPConnection) -> socket.socket:
        try:
            return super().new_connection(conn)
        except CallbackUrlError as exc:
            raise BlockedAddressError(conn, f"callback address refused: {exc}") from exc


class BlockedAddressError(NewConnectionError):
    """urllib3's connection error for a refused address, so requests raises ConnectionError."""


def guarded_session(*, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> requests.Session:
    """A session for callbacks (use it with `outbound.bounded_request`): every connection made and
    checked by an AddressGuard, no proxies or .netrc from the environment."""
    return deadline_session(AddressGuard(allow_private=allow_private, resolver=resolver))


def blocked_reason(exc: BaseException) -> str | None:
    """The refusal message if `exc` (or what caused it) is a blocked callback address."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CallbackUrlError):
            return str(current)
        if isinstance(current, BlockedAddressError):
            return str(current.__cause__ or current)
        nested = getattr(current, "reason", None)
        current = nested if isinstance(nested, BaseException) else (current.__cause__ or current.__context__)
    return None
