"""An app's ``maxConnections``, whatever its clients' protocol: every connection of the app
takes a seat at its admission (Pusher's upgrade, an isolated app's Socket.IO CONNECT) and gives
it back when it closes, so that a pusher-js client and a Socket.IO page of one app count as
one. The count is this server's, its workers' included (``quota.py``), and the other
instances' as their last heartbeats told (``elsewhere``, fed by ``own``). No one client (an
address, an IPv6 /64, as every per-address bound counts it) takes every seat: it holds at most
its share. The process builds one and hands it to every protocol.

Seats are counted under a name that outlives a key rotation (``seat_name``): a Socket.IO page
stays open when its app's key changes, and counted under the old key it would be missed by
the new key's count until it closed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from echo_common.counts import AddressCounts, client_key

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


def seat_name(app: App) -> str:
    """What ``app``'s seats count under, on this server, its workers and the cluster's
    heartbeat: an isolated app's tag, which its id alone makes (unique among the apps, and no
    key can be mistaken for it: it holds the separator); a ``clients`` entry's key, since
    their ids may repeat."""
    return app.tag or app.key


class AppSeats:
    """Open connections by app (the quota) and by app and client."""

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
        name, client = seat_name(app), client_key(address)
        limit = app.limits.max_connections
        if not limit:
            self.quota.add(name)
        elif not self.quota.take(name, limit - self.elsewhere(name)):
            return OVER_QUOTA
        else:
            share = app.limits.max_connections_per_address or -(-limit // ADDRESS_SHARE)
            if self.per_address[name].get(client, 0) >= share and not trusted(address):
                self.quota.give(name)
                return OVER_SHARE
        self.per_address[name].add(client)
        return None

    def give(self, app: App, address: str) -> None:
        """The seat taken for ``app`` (as it was then: its key may have changed since) from
        ``address``."""
        name = seat_name(app)
        self.quota.give(name)
        self.per_address[name].remove(client_key(address))

    def count(self, name: str) -> int:
        """This server's connections (every worker's) of the app ``seat_name`` names."""
        return self.quota.count(name)

    def everywhere(self, name: str) -> int:
        """Its connections on every live instance: this server's, and the others' as their
        last heartbeats told (``elsewhere``). A figure (`/apps/{id}/status`), read from
        memory."""
        return self.quota.count(name) + self.elsewhere(name)

    def own(self) -> dict[str, int]:
        """This process's connections by ``seat_name``, for the other instances."""
        return self.quota.own()


def _none_elsewhere(name: str) -> int:
    """One instance: no other holds any of an app's connections."""
    return 0
