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
from .transport.packets import event_packet
from .transport.sockets import Socket
from .transport.websocket import text_frame

DeliveryObserver = Callable[[int, int, float], None]


class Hub:
    def __init__(self, rooms: Rooms, sockets: Mapping[str, Socket]) -> None:
        self.rooms = rooms
        self.sockets = sockets
        # (events, messages delivered, seconds spent) once per batch, for metrics.
        self.observer: DeliveryObserver = lambda events, delivered, seconds: None
        self.delivered = 0  # running total, read by metrics at scrape time

    def deliver(self, events: list[BroadcastEvent]) -> int:
        started = time.perf_counter()
        delivered = 0
        for event in events:
            delivered += self.emit_to_room(event.channel, event.event, event.data,
                                           event.socket)
        self.delivered += delivered
        self.observer(len(events), delivered, time.perf_counter() - started)
        return delivered

    def emit_to_room(self, room: str, event: str, data_json: str,
                     except_id: str | None = None) -> int:
        members = self.rooms.members(room)
        if members is None:
            # socket.io 2 puts every socket in a room named after its id, so a
            # publish to that id reaches it; laravel-echo-server users rely on it.
            own = self.sockets.get(room)
            if own is None:
                return 0
            members = {own}
        packet = event_packet(event, room, data_json)
        frame = text_frame(packet)
        exclude = self.sockets.get(except_id) if except_id else None
        count = 0
        for socket in members:
            if socket is not exclude:
                socket.session.send_prebuilt(packet, frame)
                count += 1
        return count
