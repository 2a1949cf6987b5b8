"""Where outbound webhooks may go: the SSRF guard.

A webhook URL is chosen by whoever submits a job, and the worker POSTs to it from inside the
operator's network. So a destination is refused when any address its host resolves to is not
a public unicast address (private, loopback, link-local, multicast, reserved, unspecified,
shared/CGNAT, IPv4-mapped forms of those), unless the host name or a network containing the
address is allow-listed (``BATCHYARD_WEBHOOKS__ALLOW``). It runs at submit time (a clear input
error) and again before every delivery (DNS answers change); the sender then connects to the
very address that was checked, so a rebinding DNS server cannot swap it in between.

This lives in schemas because both the producer and the worker need it and neither may import
the other; it does no I/O except through the ``resolve`` function it is given.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from schemas.errors import GatewayError

__all__ = ["Address", "DestinationRefused", "Resolver", "check_destination", "resolve_host"]

Address = IPv4Address | IPv6Address
Resolver = Callable[[str, int], list[Address]]


class DestinationRefused(GatewayError):
    """A webhook URL is malformed or points at a non-public address that is not allow-listed."""

    code = "webhook_destination_refused"


def resolve_host(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (the system resolver, as the HTTP client would)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"webhook host {host!r} does not resolve ({exc})") from None
    seen: dict[str, Address] = {}
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        seen.setdefault(text, ip_address(text))
    return list(seen.values())


def check_destination(url: str, allow: Sequence[str] = (), *,
                      resolve: Resolver = resolve_host) -> list[Address]:
    """The addresses ``url`` may be reached at; DestinationRefused when it must not be used."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused(f"webhook URL {url!r} must be http(s)://host/...")
    host = parts.hostname.lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused(f"webhook URL {url!r} has a bad port") from None
    names = {a for a in allow if "/" not in a}
    try:
        addresses = [ip_address(host)]
    except ValueError:
        addresses = resolve(host, port)
    if not addresses:
        raise DestinationRefused(f"webhook host {host!r} does not resolve")
    if host in names:
        return addresses
    networks = [ip_network(a, strict=False) for a in allow if "/" in a]
    networks += [ip_network(a) for a in names if _is_ip(a)]
    for address in addresses:
        kind = _non_public(address)
        if kind and not any(address in net for net in networks):
            raise DestinationRefused(
                f"webhook host {host!r} resolves to {address} ({kind}); add the host "
                "or a network to BATCHYARD_WEBHOOKS__ALLOW to deliver there")
    return addresses


def _non_public(address: Address) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is one."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return _non_public(address.ipv4_mapped)
    for kind, flag in (("loopback", address.is_loopback), ("unspecified", address.is_unspecified),
                       ("link-local", address.is_link_local), ("multicast", address.is_multicast),
                       ("private", address.is_private), ("reserved", address.is_reserved)):
        if flag:
            return kind
    return None if address.is_global else "non-global"


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
