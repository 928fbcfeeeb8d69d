"""The hot path: one event, one pre-built frame per wire format, every member's transport.

Events come in batches from a source. For each event and each wire format present in its
channel, the wire builds the frame once, whatever the number of recipients; the wire then
writes it to its own set of connections (no task, no per-recipient encoding, no copy of the
member set). Several events read together go to each wire as one batch, so a client gets
its frames of the batch in one write. With connection-state recovery on, each packet to a
recorded channel is first kept in the history, which gives it its offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from broadcaster.event import BroadcastEvent

from ..apps.tags import SEPARATOR
from .cache import LastEvents
from .connection import Connection, Item, Wire
from .history import History
from .positions import Positions
from .rooms import Groups, Rooms

# Told once per batch how long it took to go out (seconds): metrics' histogram.
DeliveryObserver = Callable[[float], None]
# How the fan-out and the history name presence changes; each wire says them its own way.
# They begin with the control character no name from outside may hold (apps/tags.py: every
# edge refuses it in channel and event names), so no publisher can send one as an event.
MEMBER_ADDED, MEMBER_REMOVED = SEPARATOR + "member_added", SEPARATOR + "member_removed"


class Fanout:
    def __init__(self, rooms: Rooms, connections: Mapping[str, Connection],
                 last_events: LastEvents, history: History | None = None,
                 positions: Positions | None = None,
                 observer: DeliveryObserver | None = None) -> None:
        self.rooms = rooms
        self.connections = connections
        self.last_events = last_events
        self.history = history
        self.observer = observer  # None: nobody times the batches (metrics off)
        self.delivered = 0  # running total, read by metrics at scrape time
        # With recovery on other instances: where this instance is in the stream, moved as
        # each stream event goes out (the history puts it into the offsets).
        self.positions = positions

    def deliver(self, events: list[BroadcastEvent]) -> int:
        observer = self.observer
        started = time.perf_counter() if observer is not None else 0.0
        self.last_events.record(events)
        if len(events) == 1:
            event = events[0]
            positions = self.positions
            if positions is not None:
                if event.id is not None:
                    positions.stream = event.id
                elif positions.watched:
                    positions.unrecorded(event.channel)
            delivered = self._emit(event.channel, event.event, event.data, event.socket)
        else:
            delivered = self._deliver_batch(events)
        positions = self.positions
        if positions is not None and positions.waiting:
            positions.wake()
        self.delivered += delivered
        if observer is not None:
            observer(time.perf_counter() - started)
        return delivered

    def _deliver_batch(self, events: list[BroadcastEvent]) -> int:
        batches: dict[Wire[Any], list[Item[Any]]] = {}
        last_wire: Wire[Any] | None = None
        last_batch: list[Item[Any]] = []
        connections = self.connections
        groups_of = self.rooms.groups
        history = self.history
        positions = self.positions
        for event in events:
            channel = event.channel
            if positions is not None:
                if event.id is not None:
                    positions.stream = event.id
                elif positions.watched:
                    positions.unrecorded(channel)
            own = connections.get(channel)
            groups = groups_of(channel) if own is None else self._own(own)
            # Recorded even with nobody here: a dropped connection may come back for it.
            offset = 0 if history is None or own is not None else history.record(
                channel, event.event, event.data, event.socket)
            if groups is None:
                continue
            exclude = connections.get(event.socket) if event.socket else None
            for wire, members in groups.items():
                item = (members, channel, event.event, event.data, offset, exclude)
                if wire is last_wire:
                    last_batch.append(item)
                    continue
                batch = batches.get(wire)
                if batch is None:
                    batch = batches[wire] = []
                batch.append(item)
                last_wire, last_batch = wire, batch
        return sum(wire.send_batch(batch) for wire, batch in batches.items())

    @staticmethod
    def _own(connection: Connection) -> Groups:
        # socket.io 2 puts every socket in a room named after its id, so a publish to that
        # id reaches it; laravel-echo-server users rely on it. The id wins over a channel of
        # the same name: subscribing to "<someone's id>" must not take their events.
        return {connection.state.wire: (connection,)}

    def emit_to_room(self, room: str, event: str, data_json: str | bytes,
                     except_id: str | None = None) -> int:
        """A packet no source recorded (a whisper, an event relayed from another instance)."""
        positions = self.positions
        if positions is not None and positions.watched:
            positions.unrecorded(room)
        return self._emit(room, event, data_json, except_id)

    def _emit(self, room: str, event: str, data_json: str | bytes,
              except_id: str | None = None) -> int:
        own = self.connections.get(room)
        groups = self.rooms.groups(room) if own is None else self._own(own)
        history = self.history
        offset = 0 if history is None or own is not None else history.record(
            room, event, data_json, except_id)
        if groups is None:
            return 0
        exclude = self.connections.get(except_id) if except_id else None
        sent = 0
        for wire, members in groups.items():
            sent += wire.send(members, room, event, data_json, offset, exclude)
        return sent

    def records(self, channel: str) -> bool:
        """Whether packets on ``channel`` are kept for recovery."""
        history = self.history
        return history is not None and channel in history.channels

    def announce_member(self, channel: str, added: bool, member_json: str,
                        except_id: str | None = None) -> int:
        """A presence member joined or left: each wire says it its own way."""
        groups = self.rooms.groups(channel)
        history = self.history
        positions = self.positions
        if positions is not None and positions.watched:
            positions.unrecorded(channel)
        offset = 0 if history is None else history.record(
            channel, MEMBER_ADDED if added else MEMBER_REMOVED, member_json, except_id)
        if groups is None:
            return 0
        exclude = self.connections.get(except_id) if except_id else None
        event = MEMBER_ADDED if added else MEMBER_REMOVED
        sent = 0
        for wire, members in groups.items():
            sent += wire.send(members, channel, event, member_json, offset, exclude)
        return sent
