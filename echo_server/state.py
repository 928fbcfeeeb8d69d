"""What the HTTP API, metrics and the status page read: figures, never transport internals.

One instance answers from its own rooms, sessions and presence store. The
scaling issue puts a Redis-backed implementation behind the same interface so
that ``/status`` and ``/channels`` report cluster-wide figures.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Protocol

from .presence import Member, PresenceStore
from .rooms import Rooms
from .transport.engine import EngineServer


class ServerState(Protocol):
    async def connection_count(self) -> int: ...
    async def channel_counts(self, prefix: str = "") -> dict[str, int]: ...
    async def channel_count(self, channel: str) -> int: ...
    async def presence_members(self, channel: str) -> list[Member]: ...
    def uptime(self) -> float: ...


class LocalState:
    def __init__(self, rooms: Rooms, engine: EngineServer, presence: PresenceStoreRef) -> None:
        self.rooms = rooms
        self.engine = engine
        self._presence = presence
        self.started = time.monotonic()

    async def connection_count(self) -> int:
        return len(self.engine.sessions)

    def connections_by_kind(self) -> Counter[tuple[str, str]]:
        """(protocol, transport) -> connections, e.g. ("eio3", "websocket")."""
        return Counter((f"eio{s.eio}", s.transport_name) for s in self.engine.sessions.values())

    async def channel_counts(self, prefix: str = "") -> dict[str, int]:
        return {name: count for name, count in self.rooms.counts().items()
                if name.startswith(prefix)}

    async def channel_count(self, channel: str) -> int:
        return self.rooms.count(channel)

    async def presence_members(self, channel: str) -> list[Member]:
        return await self._presence().members(channel)

    def uptime(self) -> float:
        return time.monotonic() - self.started


class PresenceStoreRef(Protocol):
    def __call__(self) -> PresenceStore: ...


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ClusterState(LocalState):
    """This instance's live figures plus the latest snapshot of every other live instance
    (heartbeat-old at most), so `/status` and `/channels` count the whole cluster."""

    def __init__(self, local: LocalState, peers: PeersRef) -> None:
        super().__init__(local.rooms, local.engine, local._presence)
        self.started = local.started
        self._peers = peers

    async def connection_count(self) -> int:
        own = await super().connection_count()
        return own + sum(int(p.get("connections", 0)) for p in await self._peers())

    async def channel_counts(self, prefix: str = "") -> dict[str, int]:
        counts = await super().channel_counts(prefix)
        for peer in await self._peers():
            for name, count in (peer.get("channels") or {}).items():
                if name.startswith(prefix):
                    counts[name] = counts.get(name, 0) + int(count)
        return counts

    async def channel_count(self, channel: str) -> int:
        own = await super().channel_count(channel)
        return own + sum(int((p.get("channels") or {}).get(channel, 0))
                         for p in await self._peers())


class PeersRef(Protocol):
    async def __call__(self) -> list[dict[str, Any]]: ...


def local_snapshot(state: LocalState) -> dict[str, Any]:
    """What this instance tells the others about itself at each heartbeat."""
    return {"connections": len(state.engine.sessions), "channels": state.rooms.counts(),
            "at": time.time()}
