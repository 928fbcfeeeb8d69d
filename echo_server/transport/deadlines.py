"""The deadlines of many objects on one loop timer: the heartbeats of every Engine.IO session,
the EIO3 open packets held a few milliseconds after their ``101``, the keep-alive and sign-in
deadlines of every Pusher connection, the header, body, keep-alive and linger timeouts of every
HTTP connection (one ``Deadlines`` each, the transport's one mechanism).

A timer per session would cost a ``TimerHandle`` each, and a heap operation every time a
client's packet moves its deadline; one sweep over every session a few times per period is
late by up to that period's quarter (50 ms at a 200 ms ``pingTimeout``). Here each object
waits in the bucket of the millisecond its next deadline falls in, and one loop timer is
armed at the earliest bucket: an object is looked at when its deadline comes, a millisecond
late at most (plus whatever else the loop is busy with), whatever the period.

A deadline that moves later costs nothing: a client's packet only writes the time it was
seen, and when the old deadline's bucket comes, the owner finds nothing due and schedules
the object again at its real deadline. Only a deadline that moves earlier (an upgrade
probe's) moves the object. An object sits in one bucket at most; it carries where (``due``,
the bucket, and ``due_slot``, its place there), so that cancelling it is two stores.

Millisecond buckets are kept for the next two seconds only. A deadline further away waits
in the bucket of a whole second, one or two seconds before it, and is scheduled again from
there (the owner, looking early, finds nothing due): with 5,000 sessions spread over a 25 s
interval there are some 400 millisecond buckets and 45 one-second ones, instead of one
bucket per session.

A bucket holds 256 objects at most; more due in the same tick fill another, chained to it.
A place in a bucket (0 to 255) is then one of the small integers Python keeps, never an
object of its own: 5,000 connections opened within a second share a one-second bucket, and
would otherwise each cost an ``int`` of 28 bytes for where they wait.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("echo_server.deadlines")

TICK = 0.001  # seconds per bucket
PER_SECOND = 1000  # ticks
NEAR = 2.0  # seconds ahead within which a deadline gets a millisecond bucket
SLOTS = 256  # objects per bucket: every place is a cached small int


class Bucket(list[Any]):
    """The objects due in one tick; ``None`` where one was cancelled or moved."""

    __slots__ = ("fuller", "tick")

    def __init__(self, tick: int, fuller: Bucket | None) -> None:
        super().__init__()
        self.tick = tick
        self.fuller = fuller  # the tick's bucket filled before this one, if any


class Scheduled(Protocol):
    due: Bucket | None
    due_slot: int


class Deadlines:
    """Calls ``fire(item, now)`` once ``item``'s scheduled time has come; ``fire`` decides
    what is due and schedules the item again if anything still is."""

    def __init__(self, fire: Callable[[Any, float], None]) -> None:
        self._fire = fire
        self._buckets: dict[int, Bucket] = {}
        self._ticks: list[int] = []  # heap of the buckets' ticks
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0  # the tick the timer is armed for
        self._running = False

    def schedule(self, item: Scheduled, when: float) -> None:
        """Look at ``item`` at ``when`` (``time.monotonic()``), or earlier if it is already
        scheduled earlier (a deadline that moved later is found out then)."""
        if when - time.monotonic() < NEAR:
            tick = math.ceil(when / TICK)
        else:  # the start of the second before the one it falls in
            tick = (math.floor(when) - 1) * PER_SECOND
        due = item.due
        if due is not None:
            if due.tick <= tick:
                return
            due[item.due_slot] = None
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = Bucket(tick, None)
            heapq.heappush(self._ticks, tick)
            if not self._running and (self._timer is None or tick < self._armed):
                self._arm(tick)
        elif len(bucket) == SLOTS:
            bucket = self._buckets[tick] = Bucket(tick, bucket)
        item.due = bucket
        item.due_slot = len(bucket)
        bucket.append(item)

    def cancel(self, item: Scheduled) -> None:
        due = item.due
        if due is not None:
            due[item.due_slot] = None
            item.due = None

    def stop(self, fire_pending: bool = False) -> None:
        """No more looks; with ``fire_pending``, every item still scheduled is looked at now,
        once, in the order of its time (what waits for a moment, such as a held write, goes
        out before its connection is closed), and one scheduled again stays where it is."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if fire_pending:
            pending = [self._buckets.pop(tick) for tick in sorted(self._ticks)]
            self._ticks.clear()
            self._running = True  # a look that schedules again arms no timer
            try:
                now = time.monotonic()
                for bucket in pending:
                    self._look(bucket, now)
            finally:
                self._running = False

    def _arm(self, tick: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = tick
        delay = tick * TICK - time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._run)

    def _run(self) -> None:
        self._timer = None
        self._running = True
        ticks, buckets = self._ticks, self._buckets
        try:
            now = time.monotonic()
            # A loop timer may run a little early (uvloop counts whole milliseconds): a
            # bucket within one tick of now is due, and ``fire`` sees its time as reached.
            last = math.floor(now / TICK) + 1
            while ticks and ticks[0] <= last:
                tick = heapq.heappop(ticks)
                self._look(buckets.pop(tick), max(now, tick * TICK))
        finally:
            self._running = False
            if ticks:
                self._arm(ticks[0])

    def _look(self, last: Bucket, reached: float) -> None:
        """Every object of one tick, in the order they were scheduled there."""
        chain = [last]
        while (fuller := chain[-1].fuller) is not None:
            chain.append(fuller)
        for bucket in reversed(chain):
            for item in bucket:
                if item is not None:
                    item.due = None
                    try:
                        self._fire(item, reached)
                    except Exception:
                        log.exception("error in a scheduled check")
