"""What the HTTP API, metrics and the status page read: figures, never the server object.

``ServerState`` is the whole interface the HTTP side gets. One instance answers from its own
channels, connections and presence store; while the cluster runs, ``peers`` adds the
latest snapshot of every other live instance, so ``/status`` and ``/channels`` report the
whole cluster. Transport figures (connections by protocol and transport) and the sources'
health come in as callables from the assembly, so this module imports no transport.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ..apps.tags import app_tag, tag_of
from .channels import ChannelCore
from .cluster import Cluster
from .presence import Member

Peers = Callable[[], Awaitable[list[dict[str, Any]]]]
# Under `--workers N`: the other workers' answers to a question (`metrics`, `status`) by slot,
# None from one that did not answer in time.
Siblings = Callable[[str], Awaitable[dict[int, bytes | None]]]


class SourceStatus(Protocol):
    """One event source's health (``ingest.SourceHealth``)."""
    url: str
    kind: str
    connected: bool
    since: float
    outages: int
    last_error: str | None
    events: int


class ErrorCounts(Protocol):
    @property
    def counts(self) -> Mapping[str, int]: ...


def app_figures(connections: Mapping[str, int], counts: Mapping[str, int]
                ) -> dict[str, list[int]]:
    """Per app (by id; "" for the default app): [connections, channels, subscriptions], from
    connections per app and subscribers per channel (``local_channel_counts``, or every
    worker's merged: a channel two workers hold is one channel). Read at a scrape or a status
    sample, never per event."""
    figures = {app_id: [count, 0, 0] for app_id, count in connections.items()}
    for name, count in counts.items():
        app_id = app_tag(name)[1:]
        row = figures.get(app_id)
        if row is None:
            row = figures[app_id] = [0, 0, 0]
        row[1] += 1
        row[2] += count
    return figures


class ServerState:
    def __init__(self, core: ChannelCore, *, instance_id: str,
                 connections_by_kind: Callable[[], Counter[tuple[str, str]]],
                 sources: Callable[[], list[SourceStatus]],
                 errors: ErrorCounts,
                 app_connections: Callable[[str], int],
                 webhooks: Callable[[], Mapping[str, float]] | None = None,
                 cluster: Cluster | None = None, worker: int | None = None,
                 siblings: Siblings | None = None) -> None:
        self.core = core
        self.instance_id = instance_id
        self.connections_by_kind = connections_by_kind  # (protocol, transport) -> count
        self.sources = sources
        self.errors = errors
        self.app_connections = app_connections  # an app's on every instance, by its tag
        self.webhooks = webhooks  # the webhook senders' counters, when any are configured
        self.cluster = cluster
        self.worker = worker  # this process's slot under `--workers N`
        self.siblings = siblings  # the other workers, under `--workers N`
        self.started = time.monotonic()

    @property
    def peers(self) -> Peers | None:
        """The other live instances' snapshots, while this one is in the cluster (never,
        when Redis did not answer at its start)."""
        cluster = self.cluster
        return cluster.peers if cluster is not None and cluster.running else None

    # -- this instance ------------------------------------------------------------------
    def local_connections(self) -> int:
        return sum(self.connections_by_kind().values())

    def local_channel_counts(self) -> dict[str, int]:
        return self.core.rooms.counts()

    def local_app_connections(self) -> Counter[str]:
        """This process's connections per app (by id; "" for the default app)."""
        return Counter(connection.state.tag[1:] for connection in self.core.connections.values())

    def presence_memberships(self) -> int:
        """Presence memberships of local connections (joined or joining)."""
        return self.core.presence.members

    def parked(self) -> tuple[int, int]:
        """Dropped connections held for a recovery, and their subscriptions."""
        sessions = self.core.sessions
        if sessions is None:
            return 0, 0
        return len(sessions.parked), sum(len(p.channels) for p in sessions.parked.values())

    def delivered(self) -> int:
        """Messages written to clients so far (one per recipient)."""
        return self.core.fanout.delivered

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def snapshot(self) -> dict[str, Any]:
        """What this instance tells the others about itself at each heartbeat."""
        return {"connections": self.local_connections(),
                "channels": self.local_channel_counts(), "at": time.time()}

    # -- the whole server (every live instance) -------------------------------------------
    async def _peers(self) -> list[dict[str, Any]]:
        return await self.peers() if self.peers is not None else []

    async def connection_count(self) -> int:
        return self.local_connections() + sum(int(p.get("connections", 0))
                                              for p in await self._peers())

    async def app_connection_count(self, app_id: str) -> int:
        """An isolated app's connections on every live instance, as its seats count them
        (``apps.seats``: the other instances' told with each heartbeat, so no pass over the
        connections here); the default app's ("") are the server's, as they always were:
        laravel-echo-server's ``/status`` counts every connection."""
        if not app_id:
            return await self.connection_count()
        return self.app_connections(tag_of(app_id))

    async def channel_counts(self, prefix: str = "") -> dict[str, int]:
        counts = {name: count for name, count in self.local_channel_counts().items()
                  if name.startswith(prefix)}
        for peer in await self._peers():
            for name, count in (peer.get("channels") or {}).items():
                if name.startswith(prefix):
                    counts[name] = counts.get(name, 0) + int(count)
        return counts

    async def channel_count(self, channel: str) -> int:
        return self.core.rooms.count(channel) + sum(
            int((p.get("channels") or {}).get(channel, 0)) for p in await self._peers())

    async def presence_members(self, channel: str) -> list[Member]:
        return await self.core.presence.store.members(channel)

    # -- the one action the HTTP side takes ------------------------------------------------
    def terminate_user(self, user_id: str, tag: str = "") -> int:
        """Close this instance's connections of ``user_id`` in the app whose channels carry
        ``tag`` (Pusher's terminate_connections); how many. Each through its own wire, which
        tells its client it was closed."""
        connections = [connection for connection in self.core.connections_of_user(user_id)
                       if connection.state.tag == tag]
        for connection in connections:
            connection.state.wire.disconnect(connection, "terminated")
        return len(connections)


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
