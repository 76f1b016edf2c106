"""Which addresses ``fetch_url`` may connect to: public ones, and those the config allows.

Every host is resolved first and every address it resolves to is checked (a name that
points at 10.0.0.5 is refused like 10.0.0.5 itself); numeric hosts in the odd forms that
``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``) are read as
the address they are. The connection then goes to the checked address, so DNS cannot
change its answer in between.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["AddressPolicy", "Refused", "Resolver", "literal_ip", "system_resolver"]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
_NUMERIC = re.compile(r"^[0-9a-fA-FxX.]+$")
# Cloud metadata endpoints that are not link-local (AWS IPv6, Alibaba Cloud).
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


class Refused(Exception):
    """The address may not be fetched; the message says why, for the model."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, from the system's resolver."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def literal_ip(host: str) -> IP | None:
    """``host`` as an IP address if it is one, in any form a resolver would accept."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC.match(bare) and any(c.isdigit() for c in bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _why_blocked(ip: IP) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _why_blocked(ip.ipv4_mapped)
    if ip in _METADATA or str(ip) == "169.254.169.254":
        return "a cloud metadata address"
    for test, name in ((ip.is_loopback, "a loopback address"),
                       (ip.is_link_local, "a link-local address"),
                       (ip.is_multicast, "a multicast address"),
                       (ip.is_unspecified, "an unspecified address"),
                       (ip.is_private, "a private address"),
                       (not ip.is_global, "not a public address")):
        if test:
            return name
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses pass; so do ``allow_hosts`` (names, ``*.globs``, IPs, CIDR ranges)."""

    names: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def allowing(cls, entries: Iterable[str], resolver: Resolver = system_resolver
                 ) -> AddressPolicy:
        """A policy from ``[tools.fetch_url] allow_hosts``; ``ValueError`` for a bad entry."""
        names: list[str] = []
        networks: list[Network] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                raise ValueError("an empty allow_hosts entry")
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not re.fullmatch(r"[a-z0-9*._-]+", entry):
                    raise ValueError(
                        f"{entry!r} is neither a host name nor an address/CIDR") from None
                names.append(entry)
        return cls(tuple(names), tuple(networks), resolver)

    def _name_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(fnmatch.fnmatchcase(host, n) for n in self.names)

    def _ip_allowed(self, ip: IP) -> bool:
        return any(ip in net for net in self.networks if net.version == ip.version)

    async def address(self, host: str, port: int) -> IP:
        """The address to connect to for ``host``; ``Refused`` when it may not be used."""
        if not host:
            raise Refused("the URL has no host")
        ip = literal_ip(host)
        if ip is not None:
            addresses = [ip]
        else:
            try:
                addresses = [ipaddress.ip_address(a.split("%", 1)[0])
                             for a in await self.resolver(host, port)]
            except (OSError, ValueError) as err:
                raise Refused(f"the host {host!r} could not be resolved") from err
            if not addresses:
                raise Refused(f"the host {host!r} could not be resolved")
        if self._name_allowed(host):
            return addresses[0]
        for candidate in addresses:
            why = None if self._ip_allowed(candidate) else _why_blocked(candidate)
            if why is not None:
                shown = host if ip is None else str(ip)
                raise Refused(f"{shown} is {why} ({candidate}); chatbridge does not fetch "
                              "such addresses unless [tools.fetch_url] allow_hosts lists them")
        return addresses[0]
