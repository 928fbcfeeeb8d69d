"""The hot path: one event, one pre-built frame, every member's transport.

Events come in batches from a source; each is encoded into its Engine.IO
packet and websocket frame exactly once, whatever the number of recipients or
protocol generations (a ``42[...]`` message is the same text for EIO3 and
EIO4; only polling framing differs, and that happens at flush time). No task,
no per-recipient encoding, no copy of the member set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from broadcaster.event import BroadcastEvent

from .rooms import Rooms
from .transport.packets import event_message
from .transport.sockets import Socket
from .transport.websocket import encode_frame
from .transport.wsconn import WebSocketConnection

DeliveryObserver = Callable[[int, int, float], None]
COALESCE_LIMIT = 64 * 1024  # bytes of frames gathered per client before a write


class Hub:
    def __init__(self, rooms: Rooms, sockets: Mapping[str, Socket]) -> None:
        self.rooms = rooms
        self.sockets = sockets
        # (events, messages delivered, seconds spent) once per batch, for metrics.
        self.observer: DeliveryObserver = lambda events, delivered, seconds: None
        self.delivered = 0  # running total, read by metrics at scrape time

    def deliver(self, events: list[BroadcastEvent]) -> int:
        started = time.perf_counter()
        if len(events) == 1:
            event = events[0]
            delivered = self.emit_to_room(event.channel, event.event, event.data, event.socket)
        else:
            delivered = self._deliver_coalesced(events)
        self.delivered += delivered
        self.observer(len(events), delivered, time.perf_counter() - started)
        return delivered

    def _deliver_coalesced(self, events: list[BroadcastEvent]) -> int:
        """Several events read together: each websocket client gets its frames of the
        batch in one write (one syscall instead of one per event), in publish order.
        Polling clients queue them anyway and get them in one response."""
        pending: dict[WebSocketConnection, list[bytes]] = {}
        # Bytes gathered per client, kept only once a client has a second frame: with
        # one recipient per event (private channels) most clients never do.
        sizes: dict[WebSocketConnection, int] = {}
        count = 0
        for event in events:
            members = self._members(event.channel)
            if members is None:
                continue
            message = event_message(event.event, event.channel, event.data)
            frame = encode_frame(message)
            packet: str | None = None  # the text, for polling clients only
            exclude = self.sockets.get(event.socket) if event.socket else None
            for socket in members:
                if socket is exclude:
                    continue
                count += 1
                session = socket.session
                ws = session.ws
                if ws is None:
                    if packet is None:
                        packet = message.decode("utf-8")
                    session.send_prebuilt(packet, frame)
                    continue
                frames = pending.get(ws)
                if frames is None:
                    pending[ws] = [frame]
                    continue
                frames.append(frame)
                total = (sizes.get(ws) or len(frames[0])) + len(frame)
                if total >= COALESCE_LIMIT:
                    # Bounded: a huge burst goes out in pieces, keeping each write
                    # small enough not to stall the client's TCP window for long.
                    ws.write(b"".join(frames))
                    del pending[ws]
                    total = 0
                sizes[ws] = total
        for ws, frames in pending.items():
            ws.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return count

    def _members(self, room: str) -> set[Socket] | None:
        # socket.io 2 puts every socket in a room named after its id, so a publish to that
        # id reaches it; laravel-echo-server users rely on it. The id wins over a channel of
        # the same name: subscribing to "<someone's id>" must not take their events.
        own = self.sockets.get(room)
        if own is not None:
            return {own}
        return self.rooms.members(room)  # type: ignore[return-value]

    def emit_to_room(self, room: str, event: str, data_json: str | bytes,
                     except_id: str | None = None) -> int:
        members = self._members(room)
        if members is None:
            return 0
        message = event_message(event, room, data_json)
        frame = encode_frame(message)
        packet: str | None = None
        exclude = self.sockets.get(except_id) if except_id else None
        # The loop below runs once per recipient: nothing in it that can be done once.
        for socket in members:
            if socket is exclude:
                continue
            ws = socket.session.ws
            if ws is not None:
                ws.write(frame)  # the transport's own write: no Python frame between
            else:
                if packet is None:
                    packet = message.decode("utf-8")
                socket.session.send_prebuilt(packet, frame)
        return len(members) - (exclude is not None and exclude in members)
