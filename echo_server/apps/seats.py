"""An app's ``maxConnections``, whatever its clients' protocol: every connection of the app
takes a seat at its admission (Pusher's upgrade, an isolated app's Socket.IO CONNECT) and gives
it back when it closes, so that a pusher-js client and a Socket.IO page of one app count as
one. The count is this server's, its workers' included (``quota.py``), and the other
instances' as their last heartbeats told (``elsewhere``, fed by ``own``). No one address takes
every seat: it holds at most its share. The process builds one and hands it to every protocol.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from echo_common.counts import AddressCounts

from .model import App
from .quota import AppQuota, SharedAppQuota


@dataclass(frozen=True, slots=True)
class SeatRefusal:
    """Pusher's close code, and the message both protocols give (Socket.IO's
    ``connect_error``)."""

    code: int
    message: str


OVER_QUOTA = SeatRefusal(4004, "App is over its connection quota (maxConnections)")
# 4100: pusher-js retries later.
OVER_SHARE = SeatRefusal(4100, "Over capacity: this address holds its share of the app's "
                               "connections (maxConnectionsPerAddress)")


ADDRESS_SHARE = 4  # without maxConnectionsPerAddress, an address may hold a quarter of an app's


class AppSeats:
    """Open connections by app key (the quota) and by app key and address."""

    def __init__(self, quota: AppQuota | SharedAppQuota | None = None,
                 elsewhere: Callable[[str], int] | None = None) -> None:
        self.quota = quota or AppQuota()
        self.elsewhere = elsewhere or _none_elsewhere
        self.per_address: defaultdict[str, AddressCounts] = defaultdict(AddressCounts)

    def take(self, app: App, address: str, trusted: Callable[[str], bool]
             ) -> SeatRefusal | None:
        """A seat for a connection of ``app`` from ``address`` (None), or why not; a seat
        taken is given back with ``give``. ``trusted``: addresses that carry many clients
        (a proxy), never held to one address's share."""
        key = app.key
        limit = app.limits.max_connections
        if not limit:
            self.quota.add(key)
        elif not self.quota.take(key, limit - self.elsewhere(key)):
            return OVER_QUOTA
        else:
            share = app.limits.max_connections_per_address or -(-limit // ADDRESS_SHARE)
            if self.per_address[key].get(address, 0) >= share and not trusted(address):
                self.quota.give(key)
                return OVER_SHARE
        self.per_address[key].add(address)
        return None

    def give(self, key: str, address: str) -> None:
        """The seat taken under ``key`` (the app's key then) from ``address``."""
        self.quota.give(key)
        self.per_address[key].remove(address)

    def count(self, key: str) -> int:
        """This server's connections of the app (every worker's)."""
        return self.quota.count(key)

    def own(self) -> dict[str, int]:
        """This process's connections by app key, for the other instances."""
        return self.quota.own()


def _none_elsewhere(key: str) -> int:
    """One instance: no other holds any of an app's connections."""
    return 0
