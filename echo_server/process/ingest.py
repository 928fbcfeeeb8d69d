"""Keeps an event source running: reconnect with backoff and jitter, report
health, hand every batch to the hub.

An outage is logged once when it starts and once when it ends, however many
retries it takes; the server keeps serving its clients meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from broadcaster.event import BroadcastEvent
from broadcaster.sources.base import EventSource

from ..apps.tags import SEPARATOR
from ..core.limits import event_name_problem

log = logging.getLogger("echo_server.ingest")


@dataclass(slots=True)
class SourceHealth:
    url: str
    kind: str
    connected: bool = False
    since: float = 0.0
    outages: int = 0
    last_error: str | None = None
    events: int = 0


Deliver = Callable[[list[BroadcastEvent]], object]


def default_app_only(deliver: Deliver) -> Deliver:
    """A broadcast source (Redis, a stream, PostgreSQL) feeds the default app: a channel
    name that carries another app's tag (apps/tags.py) is dropped, never delivered there, and
    so is an event whose name holds the same character (the core's own presence changes are
    named with it: ``core.fanout.MEMBER_ADDED``)."""
    def checked(batch: list[BroadcastEvent]) -> object:
        for event in batch:
            if SEPARATOR in event.channel or event_name_problem(event.event):
                log.warning("an event %r for %r dropped: a source's channel and event names "
                            "hold no \\x1f", event.event, event.channel)
                batch = [e for e in batch
                         if SEPARATOR not in e.channel and not event_name_problem(e.event)]
                break
        return deliver(batch)
    return checked


class SourceRunner:
    def __init__(self, source: EventSource, deliver: Callable[[list[BroadcastEvent]], object],
                 *, min_backoff: float = 0.1, max_backoff: float = 5.0,
                 on_down: Callable[[SourceRunner, BaseException], None] | None = None) -> None:
        self.source = source
        self.deliver = deliver
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.on_down = on_down
        self.health = SourceHealth(source.display_url, source.kind)
        self.connected_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"source {self.health.url}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.source.close()

    def carried(self, events: int) -> None:
        """Events of this source that went out without passing through it (the HTTP API's,
        straight to the fan-out), counted as its own."""
        self.health.events += events

    async def _ack(self, batch: list[BroadcastEvent]) -> None:
        """Confirm a delivered batch even when the runner is being stopped right now: an
        acknowledgement cut off here would make a restarted instance deliver it again."""
        ack = asyncio.ensure_future(self.source.ack(batch))
        try:
            await asyncio.shield(ack)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ack, 2.0)
            raise

    async def _run(self) -> None:
        attempt = 0
        down = False
        # Only sources that can replay (streams) confirm; the others skip the extra await.
        acks = type(self.source).ack is not EventSource.ack
        while True:
            try:
                await self.source.connect()
                await self.source.subscribe()
                if down:
                    log.info("event source %s is back after %.1f s", self.health.url,
                             time.monotonic() - self.health.since,
                             extra={"source": self.health.url})
                down = False
                attempt = 0
                self.health.connected = True
                self.health.since = time.monotonic()
                self.connected_event.set()
                while True:
                    batch = await self.source.next_batch()
                    if batch:
                        self.health.events += len(batch)
                        self.deliver(batch)
                    if acks:
                        await self._ack(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any driver failure means "reconnect"
                self.health.connected = False
                self.connected_event.clear()
                self.health.last_error = f"{type(exc).__name__}: {exc}"
                if not down:
                    down = True
                    self.health.outages += 1
                    self.health.since = time.monotonic()
                    if self.on_down is not None:
                        self.on_down(self, exc)
                    else:
                        log.warning("event source %s is unreachable (%s); retrying in the "
                                    "background", self.health.url, self.health.last_error,
                                    extra={"source": self.health.url})
                with contextlib.suppress(Exception):
                    await self.source.close()
                delay = min(self.max_backoff, self.min_backoff * 2 ** min(attempt, 20))
                attempt += 1
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
