"""Connection-state recovery: a client that lost its connection comes back as the same
connection, in the same channels, and gets every packet it missed, or nothing at all.

A recoverable connection gets a token (socket.io's ``pid``: a credential only its client
knows). When it drops for a reason the network gave (not a goodbye from the client), its
state is parked under that token for the recovery window, and the history keeps what its
channels are sent meanwhile. The client comes back with the token and the offset of the
last packet it got; recovery succeeds only when every packet after that offset on every one
of its channels is still in the history (centrifuge's rule, not socket.io's, which recovers
partially and loses quiet clients, clients that never got a packet, and second recoveries).

Presence is not held for the whole window: the parked member stays for ``presence_grace``
(a page reload or a short drop announces nothing), then leaves, announced; a later recovery
announces its join again.
"""

from __future__ import annotations

import asyncio
import secrets
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from .connection import ClientState, Connection
from .history import Entry, HistoryLimits
from .positions import offset_parts
from .presence import Member

# Why a connection ended, as the transports say it, for the ends that a reconnect may follow
# (socket.io's RECOVERABLE_DISCONNECT_REASONS): not the client's own close or namespace
# disconnect, not a protocol error.
SHUTTING_DOWN = "server shutting down"
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout",
                                 SHUTTING_DOWN, "forced close"})


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    window: float = 120.0  # maxDisconnectionDuration
    presence_grace: float = 5.0
    catch_up: float = 10.0  # recovery on another instance: see core.shared_sessions
    history: HistoryLimits = field(default_factory=HistoryLimits)


_NO_HEADERS: dict[str, str] = {}
_NO_CHANNELS: frozenset[str] = frozenset()


class Parked:
    """A dropped connection that may come back: only what a recovery needs (its id, a small
    state with its token, claims and presence, its channels and the offsets it joined them
    at), never the connection object, its buffers, handshake headers or live
    per-subscription objects. For presence it stands in for the connection (``id``,
    ``state``)."""

    __slots__ = ("channels", "expiry", "grace", "id", "members", "missed", "offsets", "state")

    def __init__(self, connection: Connection, channels: dict[str, int]) -> None:
        self.id = connection.id
        old = connection.state
        state = self.state = ClientState(old.wire, old.address, _NO_HEADERS)
        state.channels = _NO_CHANNELS  # type: ignore[assignment]  # never joins (216 bytes)
        state.claims, state.presence = old.claims, old.presence
        state.recovery_token, state.tag = old.recovery_token, old.tag
        self.channels = tuple(channels)  # the channels, and the offset it joined each at
        self.offsets = array("q", channels.values())
        # Its presence, once the grace made it leave.
        self.members: dict[str, Member] | None = None
        self.missed: list[Entry] = []  # found by a recovery, to be sent
        self.grace: asyncio.TimerHandle | None = None  # ends its presence
        self.expiry: asyncio.TimerHandle | None = None  # ends the session

    @property
    def connection_id(self) -> str:
        return self.id

    def joined(self) -> zip[tuple[str, int]]:
        return zip(self.channels, self.offsets, strict=True)


class RecoveryRefused(Exception):
    """Why a recovery failed, in a word a metric can carry (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sessions:
    """Tokens of live recoverable connections, and the parked ones (also by client, oldest
    first, for the per-address bound)."""

    def __init__(self, options: RecoveryOptions) -> None:
        self.options = options
        self.live: dict[str, Connection] = {}
        self.parked: dict[str, Parked] = {}
        self.by_client: dict[str, dict[str, None]] = {}  # client -> its parked tokens, in order

    def issue(self, connection: Connection) -> str:
        state = connection.state
        token = state.recovery_token
        if token is None:
            token = state.recovery_token = secrets.token_urlsafe(15)
        self.live[token] = connection
        return token

    def park(self, connection: Connection, channels: dict[str, int],
             on_grace: Callable[[Parked], None],
             on_expiry: Callable[[Parked], None]) -> Parked:
        token = connection.state.recovery_token
        assert token is not None
        self.live.pop(token, None)
        parked = self.parked[token] = Parked(connection, channels)
        self.by_client.setdefault(parked.state.client, {})[token] = None
        loop = asyncio.get_running_loop()
        if parked.state.presence:
            parked.grace = loop.call_later(self.options.presence_grace, on_grace, parked)
        parked.expiry = loop.call_later(self.options.window, self._expire, token, on_expiry)
        return parked

    def _expire(self, token: str, on_expiry: Callable[[Parked], None]) -> None:
        parked = self.take(token)
        if parked is not None:
            on_expiry(parked)

    def take(self, token: str) -> Parked | None:
        parked = self.parked.pop(token, None)
        if parked is not None:
            for timer in (parked.grace, parked.expiry):
                if timer is not None:
                    timer.cancel()
            client = parked.state.client
            tokens = self.by_client.get(client)
            if tokens is not None:
                tokens.pop(token, None)
                if not tokens:
                    del self.by_client[client]
        return parked

    def oldest(self, client: str) -> str | None:
        """The token of ``client``'s longest-parked session, or None."""
        tokens = self.by_client.get(client)
        return next(iter(tokens)) if tokens else None

    def held_by(self, client: str) -> int:
        tokens = self.by_client.get(client)
        return len(tokens) if tokens else 0

    def forget(self, connection: Connection) -> None:
        token = connection.state.recovery_token
        if token is not None and self.live.get(token) is connection:
            del self.live[token]


def parse_offset(text: object, newest: int) -> int | None:
    """The client's last offset; None when it sent none (it never got a packet)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise RecoveryRefused("bad_offset")
    try:
        offset, _ = offset_parts(text)
    except ValueError:
        raise RecoveryRefused("bad_offset") from None
    if offset > newest:
        raise RecoveryRefused("bad_offset")  # from another server's life, or made up
    return offset


def merged(parts: list[list[Entry]]) -> list[Entry]:
    """One list in offset order: the order the connection would have got them in."""
    if len(parts) == 1:
        return parts[0]
    return sorted((entry for part in parts for entry in part), key=lambda entry: entry.seq)
