"""Pusher's cache channels (``cache-``, ``private-cache-``, ``private-encrypted-cache-``,
``presence-cache-``): a new subscriber first gets the channel's last event, or is told there
is none (pusher-js's ``pusher:cache_miss``, and the ``cache_miss`` webhook). Names are
shared by every client kind, so a socket.io client on such a channel gets the last event too.
Bounded: the last event of at most ``MAX_CHANNELS`` channels, least recently published
first out."""

from __future__ import annotations

from collections import OrderedDict

from broadcaster.event import BroadcastEvent

from .connection import Connection
from .events import CacheMiss, Lifecycle

PREFIXES = ("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-")
MAX_CHANNELS = 10_000


def is_cache(channel: str) -> bool:
    return channel.startswith(PREFIXES)


class LastEvents:
    __slots__ = ("_last", "lifecycle")

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._last: OrderedDict[str, BroadcastEvent] = OrderedDict()

    def record(self, events: list[BroadcastEvent]) -> None:
        last = self._last
        for event in events:
            if event.channel.startswith(PREFIXES):
                last[event.channel] = event
                last.move_to_end(event.channel)
                if len(last) > MAX_CHANNELS:
                    last.popitem(last=False)

    def give(self, connection: Connection, channel: str) -> None:
        """Just subscribed to ``channel``: its last event, or the miss."""
        if not channel.startswith(PREFIXES):
            return
        event = self._last.get(channel)
        wire = connection.state.wire
        if event is None:
            wire.cache_miss(connection, channel)
            if self.lifecycle.wants(CacheMiss):
                self.lifecycle.emit(CacheMiss(channel))
        else:
            wire.send((connection,), channel, event.event, event.data, 0, None)
