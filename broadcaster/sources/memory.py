"""The in-process bus: fed by the HTTP API and by tests, and the embedded
default when no Redis is reachable.

``memory://[name]`` names a bus within the process: a ``Broadcaster("memory://")`` reaches
every memory source of that name (each server embedded in this process, like every instance
subscribed to one Redis), which is what tests and in-process embedding need.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from echo_common.jsoncodec import dumps

from ..event import BroadcastEvent, laravel_data
from .base import EventSource, Publisher

_BUSES: dict[str, weakref.WeakSet[MemorySource]] = {}


def _bus_name(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0].strip("/") if "://" in url else ""


class MemorySource(EventSource):
    kind = "memory"

    def __init__(self, url: str = "memory://", max_pending: int = 100_000,
                 **options: Any) -> None:
        super().__init__(url)
        self._pending: list[BroadcastEvent] = []
        self._max_pending = max_pending
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the one reading, once it reads
        _BUSES.setdefault(_bus_name(url), weakref.WeakSet()).add(self)

    def publish(self, event: BroadcastEvent) -> bool:
        """Queue an event; False when the bound is reached (the caller reports it). Safe
        from any thread: a publisher on another loop (``SyncBroadcaster``'s thread) hands
        the event to the reading loop instead of touching its state."""
        if len(self._pending) >= self._max_pending:
            return False
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is not loop:
                loop.call_soon_threadsafe(self._append, event)
                return True
        self._append(event)
        return True

    def _append(self, event: BroadcastEvent) -> None:
        self._pending.append(event)
        self._ready.set()

    async def connect(self) -> None:
        pass

    async def subscribe(self) -> None:
        pass

    async def next_batch(self) -> list[BroadcastEvent]:
        self._loop = asyncio.get_running_loop()
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        batch, self._pending = self._pending, []
        return batch

    async def close(self) -> None:
        pass


class MemoryPublisher(Publisher):
    """Publishes to every memory source of the bus named in the URL, in this process.

    The data is encoded as the server would re-encode it from Redis, so what a client
    receives does not depend on the transport."""

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self.name = _bus_name(url)

    async def publish(self, channels: Sequence[str], event: str,
                      data: Mapping[str, Any] | None, socket: str | None) -> None:
        data_json = dumps(laravel_data(data, socket))
        for source in list(_BUSES.get(self.name, ())):
            for channel in channels:
                if not source.publish(BroadcastEvent(channel, event, data_json, socket)):
                    raise OverflowError(f"memory bus {self.url!r} is full")
