"""The in-process bus: fed by the HTTP API and by tests, and the embedded
default when no Redis is reachable."""

from __future__ import annotations

import asyncio

from ..event import BroadcastEvent
from .base import EventSource


class MemorySource(EventSource):
    kind = "memory"

    def __init__(self, url: str = "memory://", max_pending: int = 100_000) -> None:
        super().__init__(url)
        self._pending: list[BroadcastEvent] = []
        self._max_pending = max_pending
        self._ready = asyncio.Event()

    def publish(self, event: BroadcastEvent) -> bool:
        """Queue an event; False when the bound is reached (the caller reports it)."""
        if len(self._pending) >= self._max_pending:
            return False
        self._pending.append(event)
        self._ready.set()
        return True

    async def connect(self) -> None:
        pass

    async def subscribe(self) -> None:
        pass

    async def next_batch(self) -> list[BroadcastEvent]:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        batch, self._pending = self._pending, []
        return batch

    async def close(self) -> None:
        pass
