"""A count per client address, shared by the transport's connection bound and the core's
subscription bound: both key by the same address and must forget an address as soon as it
holds nothing, or the map would grow with every address ever seen."""

from __future__ import annotations


class AddressCounts(dict[str, int]):
    """How many of something each client address holds; an address holding none has no
    entry, so the map is as large as the set of addresses active now."""

    def add(self, address: str) -> None:
        self[address] = self.get(address, 0) + 1

    def remove(self, address: str) -> None:
        count = self.get(address, 0)
        if count > 1:
            self[address] = count - 1
        else:
            self.pop(address, None)
