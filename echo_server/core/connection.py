"""What the core knows of a client connection, and what it asks of the wire protocol.

A connection is whatever an adapter holds for one client (a Socket.IO socket today, a Pusher
connection next): the core needs its id and a ``ClientState`` it owns, nothing of its
transport. Everything the core sends goes through the connection's ``Wire``: the adapter's
encoder and writer for one wire format. Fan-out asks the wire to build one frame per event
and to write it to a whole set of its connections, so the per-recipient loop stays the
adapter's own tight loop and no Python call is added per recipient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any, Protocol, TypeVar

from echo_common.counts import client_key

from .limits import ConnectionBounds
from .presence import Member

# The connections one wire writes to: an adapter's own type (a Socket.IO socket, a Pusher
# connection). The core never mixes them: a connection's state names the wire that made it,
# and rooms group members by that wire, so a wire is only ever handed its own connections.
# The types cannot say "this connection's own wire", so the core holds wires as ``Wire[Any]``
# and each adapter is checked against ``Wire[<its connection>]`` where it makes its wire.
C = TypeVar("C", bound="Connection", contravariant=True)

# One event for one wire: (members, channel, event, data JSON, offset, excluded connection).
Item = tuple[Collection[C], str, str, str | bytes, int | str, C | None]


class Wire(Protocol[C]):
    """One wire format (an adapter, and a generation of it when frames differ), for
    connections of type ``C``."""

    def send(self, members: Collection[C], channel: str, event: str,
             data_json: str | bytes, offset: int | str, exclude: C | None) -> int:
        """Build the event's frame once and write it to each of ``members`` but
        ``exclude``; how many got it. ``offset`` is its place in the history (0: not
        recorded), for wires that carry it; the events ``fanout.MEMBER_ADDED`` and
        ``MEMBER_REMOVED`` are presence changes, which each wire names its own way."""

    def send_batch(self, batch: Sequence[Item[C]]) -> int:
        """Several source events read together, in order: a connection may get its frames
        of the batch in one write. (Presence changes come one at a time, through ``send``.)"""

    def subscribed(self, connection: C, channel: str,
                   members: list[dict[str, Any]] | None) -> None:
        """A subscription took effect (``members``: a presence channel's list)."""

    def cache_miss(self, connection: C, channel: str) -> None:
        """A cache channel had no last event to give (a wire may say nothing)."""

    def refused(self, connection: C, channel: str, status: int) -> None:
        """A subscription was refused, with an HTTP-like status (0: no answer)."""

    def disconnect(self, connection: C, reason: str) -> None: ...

    def gone(self, connection: C) -> bool:
        """The connection closed (possibly before it ever opened in the core)."""


class ClientState:
    """The core's per-connection state: one typed object instead of a dict of keys that
    several modules read."""

    __slots__ = ("address", "bounds", "channels", "claims", "client", "expiry", "handover",
                 "headers", "joined", "pending", "presence", "recovery_token", "restored", "tag",
                 "user", "whisper_at", "whisper_tokens", "wire")

    def __init__(self, wire: Wire[Any], address: str, headers: dict[str, str]) -> None:
        self.wire = wire  # the wire that made the connection (see C above)
        self.address = address  # the client's, through trusted proxies
        self.client = client_key(address)  # what per-address bounds count it under (/64)
        self.headers = headers  # the handshake's, forwarded to the auth host
        # Its app's channel tag (apps/tags.py): "" for the default app's clients; the core
        # puts it on every name the client gives, after checking the name without it.
        self.tag = ""
        # Its app's own bounds (limits.ConnectionBounds), given by its adapter; None: the
        # server's alone.
        self.bounds: ConnectionBounds | None = None
        self.channels: set[str] = set()
        self.claims: dict[str, Any] | None = None  # a verified JWT's
        self.user: str | None = None  # signed in as (Pusher's pusher:signin)
        self.expiry: asyncio.TimerHandle | None = None  # disconnects when the token expires
        self.pending: dict[str, asyncio.Future[None]] | None = None  # authorizations in flight
        self.presence: dict[str, Member] | None = None  # channel -> this connection's member
        self.whisper_tokens = -1.0  # client-event token bucket; -1: full, never used
        self.whisper_at = 0.0
        # Recoverable connections only (core.recovery): the credential its client comes
        # back with, the history offset at which it joined each channel (the offset it
        # connected at under the key ""), and the channels a recovery gave back, whose next
        # subscribe is answered without asking the auth host again.
        self.recovery_token: str | None = None
        self.joined: dict[str, int] | None = None
        self.restored: set[str] | None = None
        # What a recovery from another instance found before the connection opened
        # (core.shared_sessions): a Handover, or the RecoveryRefused to report.
        self.handover: Any = None


class Connection(Protocol):
    id: str
    state: ClientState
