"""What happens to connections, channels and members, as typed events.

The core says what happened; metrics, publishPresence, the status page and webhooks each
listen for what they need, so none of them is called from inside the channel or
authorization code. An event is only built when something listens for its kind
(``wants``), which keeps the connect and subscribe paths as cheap as with nobody listening.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .connection import Connection
from .presence import Member

log = logging.getLogger("echo_server.core.events")


@dataclass(frozen=True, slots=True)
class ConnectionOpened:
    connection: Connection
    since: float  # monotonic time the client's handshake began
    identity: str | None  # who it is, if known (a JWT subject, a previous session)


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    connection: Connection
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    connection: Connection
    reason: str
    identities: tuple[str, ...]  # what a reconnect of this client will show as its identity


@dataclass(frozen=True, slots=True)
class Recovered:
    """A dropped connection came back whole; ``missed`` packets were sent to it."""
    connection: Connection
    missed: int


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    connection: Connection
    # unknown_session, history_evicted, other_user, other_app, bad_offset, off; from another
    # instance also unrecorded, presence, behind, no_position, unavailable
    # (core.shared_sessions)
    reason: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    connection: Connection
    channel: str


@dataclass(frozen=True, slots=True)
class SubscriptionRefused:
    connection: Connection
    channel: str
    status: int


@dataclass(frozen=True, slots=True)
class Authorized:
    """An authorization was decided (by rules, the cache or the auth host)."""
    connection: Connection
    channel: str
    allowed: bool
    status: int  # 0: no answer
    seconds: float


@dataclass(frozen=True, slots=True)
class LocalChannelOccupied:
    """The first subscriber of this instance arrived (``occupancy`` makes it server-wide)."""
    channel: str


@dataclass(frozen=True, slots=True)
class LocalChannelVacated:
    """The last subscriber of this instance left."""
    channel: str


@dataclass(frozen=True, slots=True)
class ChannelOccupied:
    """The channel's first subscriber on any instance arrived."""
    channel: str


@dataclass(frozen=True, slots=True)
class ChannelVacated:
    """The channel's last subscriber on any instance left (or its instance died)."""
    channel: str


@dataclass(frozen=True, slots=True)
class MemberAdded:
    """A user's first connection in a presence channel, anywhere (the store says so)."""
    channel: str
    member: Member


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """A user's last connection in a presence channel left, anywhere."""
    channel: str
    member: Member


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """The members of a presence channel changed; ``members`` as written, or None (read
    them from the store)."""
    channel: str
    members: list[Member] | None


@dataclass(frozen=True, slots=True)
class CacheMiss:
    """A subscriber of a cache channel that had no last event to give."""
    channel: str


@dataclass(frozen=True, slots=True)
class ClientEvent:
    connection: Connection
    channel: str
    event: str
    data_json: str


E = TypeVar("E")
Listener = Callable[[Any], Awaitable[None] | None]


class Lifecycle:
    __slots__ = ("_listeners", "_running")

    def __init__(self) -> None:
        self._listeners: dict[type, list[Listener]] = {}
        self._running: set[asyncio.Future[None]] = set()  # asynchronous listeners at work

    def on(self, kind: type[E], listener: Callable[[E], Awaitable[None] | None]) -> None:
        self._listeners.setdefault(kind, []).append(listener)

    def wants(self, kind: type) -> bool:
        return kind in self._listeners

    def emit(self, event: object) -> None:
        """Tell the listeners; an asynchronous one runs on its own (see ``deliver``)."""
        for listener in self._listeners.get(type(event), ()):
            try:
                result = listener(event)
            except Exception:
                log.exception("%s listener failed", type(event).__name__)
                continue
            if result is not None and inspect.isawaitable(result):
                task = asyncio.ensure_future(self._awaited(event, result))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    @staticmethod
    async def _awaited(event: object, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("%s listener failed", type(event).__name__)

    async def deliver(self, event: object) -> None:
        """Tell the listeners and wait for the asynchronous ones, in order: where the order
        of what they write matters (publishPresence's member lists)."""
        for listener in self._listeners.get(type(event), ()):
            try:
                result = listener(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s listener failed", type(event).__name__)
