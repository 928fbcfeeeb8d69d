"""Which address a request comes from, when proxies stand in between.

Behind nginx or a load balancer every TCP peer is the proxy. Its ``X-Forwarded-For``
is believed only when the peer is listed in ``trustedProxies``; then the client is the
right-most address of that header that is not itself a trusted proxy (the left part of
the header is whatever the client chose to send). The address binds a polling session to
the client that opened it and keys the per-address bounds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.0/8"``, ``"127.0.0.1"`` or ``"::1"``; ValueError names a bad entry."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"trustedProxies: {entry!r} is not an address or CIDR "
                             "network") from None
    return tuple(networks)


class TrustedProxies:
    __slots__ = ("_known", "networks")

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._known: dict[str, bool] = {}  # peer -> trusted, for the few peers a server sees

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        known = self._known.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self.networks)
            if len(self._known) >= 4096:
                self._known.clear()
            self._known[address] = known
        return known

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: ``peer`` itself unless it is a trusted proxy that says
        whom it forwards."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",")[-32:]]
        for hop in reversed(hops):
            if not hop:
                continue
            if not self.trusts(hop):
                return _valid_or(hop, peer)
        return peer


def _valid_or(address: str, fallback: str) -> str:
    """A forwarded hop that is not an address (garbage from a client behind the proxy)
    is not used as an identity: the proxy's own address stands in."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return fallback
