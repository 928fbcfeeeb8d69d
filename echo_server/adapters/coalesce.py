"""Several events read together, written so that each websocket gets its frames of the
batch in one write (one syscall instead of one per event), in publish order: shared by
every wire. The loop runs once per recipient, so nothing in it is a Python call but the
writes themselves.

What the writer needs of a recipient is small, and differs by one hop between the two
transports: a Pusher connection is always on a websocket (``WebSocketMember``); a Socket.IO
socket reaches its client through its Engine.IO session, which may be polling
(``PolledMember``). The wire says which it hands over, once per batch; the protocols are for
the type checker, the loop reads the attributes directly.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol, overload

from ..transport.wsconn import WebSocketConnection

COALESCE_LIMIT = 64 * 1024  # bytes of frames gathered per client before a write


class WebSocketMember(Protocol):
    """A recipient always on a websocket (Pusher's connections)."""

    @property
    def ws(self) -> WebSocketConnection: ...


class Outlet(Protocol):
    """Where a polled recipient's frames go: its websocket, or while ``ws`` is None (it
    polls, or is upgrading) ``send_prebuilt`` queues the message for its next poll. An
    Engine.IO session."""

    @property
    def ws(self) -> WebSocketConnection | None: ...

    def send_prebuilt(self, packet: str, frame: bytes) -> None: ...


class PolledMember(Protocol):
    """A recipient behind an ``Outlet`` (Socket.IO's sockets, through their session)."""

    @property
    def session(self) -> Outlet: ...


# One event: (members, websocket frame, message bytes for a poll, excluded member).
Framed = tuple[Collection[Any], bytes, bytes, Any]


@overload
def write_coalesced(batch: Sequence[tuple[Collection[PolledMember], bytes, bytes, Any]],
                    polled: Literal[True]) -> int: ...
@overload
def write_coalesced(batch: Sequence[tuple[Collection[WebSocketMember], bytes, bytes, Any]],
                    polled: Literal[False]) -> int: ...
def write_coalesced(batch: Sequence[Framed], polled: bool) -> int:
    """How many messages were written or queued. ``polled``: the members are
    ``PolledMember`` (else ``WebSocketMember``), and the message bytes are what a poll gets."""
    pending: dict[Any, list[bytes]] = {}
    # Bytes gathered per client, kept only once a client has a second frame: with one
    # recipient per event (private channels) most clients never do.
    sizes: dict[Any, int] = {}
    count = 0
    for members, frame, message, exclude in batch:
        packet: str | None = None
        for member in members:
            if member is exclude:
                continue
            count += 1
            if polled:
                session = member.session
                ws = session.ws
                if ws is None:
                    if packet is None:
                        packet = message.decode("utf-8")
                    session.send_prebuilt(packet, frame)
                    continue
            else:
                ws = member.ws
            frames = pending.get(ws)
            if frames is None:
                pending[ws] = [frame]
                continue
            frames.append(frame)
            total = (sizes.get(ws) or len(frames[0])) + len(frame)
            if total >= COALESCE_LIMIT:
                # Bounded: a huge burst goes out in pieces, keeping each write small
                # enough not to stall the client's TCP window for long.
                ws.write(b"".join(frames))
                del pending[ws]
                total = 0
            sizes[ws] = total
    for ws, frames in pending.items():
        ws.write(frames[0] if len(frames) == 1 else b"".join(frames))
    return count
