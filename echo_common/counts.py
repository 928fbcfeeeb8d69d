"""A count per client address, shared by the transport's connection bound and the core's
subscription bound: both key by the same address and must forget an address as soon as it
holds nothing, or the map would grow with every address ever seen.

What is counted is a *client*, and an IPv6 client is a /64: one subscriber's network, from
which a host picks addresses at will (privacy extensions pick a new one every day, an
attacker one per connection). So every per-address bound keys an IPv6 address by its /64
(``client_key``); IPv4 addresses, and IPv6 ones that carry an IPv4 address, are themselves.
"""

from __future__ import annotations

import ipaddress


def client_key(address: str) -> str:
    """What the per-address bounds count ``address`` under: ``2001:db8:1:2::/64`` for any
    address of that network, the address itself otherwise (IPv4, or not an address)."""
    if ":" not in address:
        return address  # IPv4 (or a Unix socket's empty peer): no parsing on this path
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"


class AddressCounts(dict[str, int]):
    """How many of something each client holds (keyed by ``client_key``); a client holding
    none has no entry, so the map is as large as the set of clients active now."""

    def add(self, key: str, count: int = 1) -> None:
        self[key] = self.get(key, 0) + count

    def remove(self, key: str, count: int = 1) -> None:
        left = self.get(key, 0) - count
        if left > 0:
            self[key] = left
        else:
            self.pop(key, None)
