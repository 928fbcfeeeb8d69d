"""Fair shares of a bounded number of requests to one backend.

One pool of connections serves every client's authorizations. First come, first served let
one client address with many sockets keep the whole pool busy with requests to a slow app,
and everybody else's authorizations then timed out waiting for a connection. Here each
client (an opaque ``who``, such as its address) holds at most ``per_client`` slots at once; beyond
that its requests wait, and freed slots go round-robin to the clients that are waiting, so a
client with one request waits for at most one turn of the others, not for their backlog.
Waiting is bounded in time (``wait_timeout``), and what one client has in flight or waiting
in number (``max_pending``): both refusals are exceptions of their own, never mistaken for
the backend's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable


class TooManyPending(Exception):
    """The client has ``max_pending`` requests in flight or waiting already."""


class NoSlotInTime(Exception):
    """No slot came free within ``wait_timeout``."""


class FairSlots:
    def __init__(self, size: int, *, per_client: int, max_pending: int,
                 wait_timeout: float) -> None:
        self.per_client = per_client
        self.max_pending = max_pending
        self.wait_timeout = wait_timeout
        self.free = size
        self._held: dict[Hashable, int] = {}
        self._pending: dict[Hashable, int] = {}  # held + waiting
        self._queues: dict[Hashable, deque[asyncio.Future[None]]] = {}
        # Clients with a waiting request and a slot to spare, in turn order.
        self._ready: OrderedDict[Hashable, None] = OrderedDict()

    @contextlib.asynccontextmanager
    async def slot(self, who: Hashable) -> AsyncIterator[None]:
        pending = self._pending.get(who, 0)
        if pending >= self.max_pending:
            raise TooManyPending(f"{pending} requests of this client are in flight or waiting")
        self._pending[who] = pending + 1
        try:
            if self.free > 0 and self._held.get(who, 0) < self.per_client:
                # Nobody eligible is waiting: _dispatch hands out every slot it can at once.
                self._take(who)
            else:
                await self._wait(who)
            try:
                yield
            finally:
                self._give_back(who)
        finally:
            left = self._pending[who] - 1
            if left:
                self._pending[who] = left
            else:
                del self._pending[who]

    async def _wait(self, who: Hashable) -> None:
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(who, deque())
        queue.append(granted)
        if self._held.get(who, 0) < self.per_client:
            self._ready.setdefault(who, None)
        try:
            async with asyncio.timeout(self.wait_timeout):
                # Shielded, so that only _dispatch settles ``granted``: a waiter cancelled
                # just as its turn comes finds it granted here, never a cancelled future
                # left in line for _dispatch to trip over.
                await asyncio.shield(granted)
        except BaseException as exc:
            if granted.done():
                self._give_back(who)  # the slot came as we gave up: the next one's turn
            else:
                queue.remove(granted)
                if not queue:
                    del self._queues[who]
                    self._ready.pop(who, None)
            if isinstance(exc, TimeoutError):
                raise NoSlotInTime(f"no free connection within {self.wait_timeout:g} s") from None
            raise

    def _take(self, who: Hashable) -> None:
        self.free -= 1
        self._held[who] = self._held.get(who, 0) + 1

    def _give_back(self, who: Hashable) -> None:
        self.free += 1
        held = self._held[who] - 1
        if held:
            self._held[who] = held
        else:
            del self._held[who]
        if who in self._queues:
            self._ready.setdefault(who, None)  # back in line, at the end of the turn
        self._dispatch()

    def _dispatch(self) -> None:
        while self.free > 0 and self._ready:
            who, _ = self._ready.popitem(last=False)
            queue = self._queues[who]
            granted = queue.popleft()
            self._take(who)
            granted.set_result(None)
            if not queue:
                del self._queues[who]
            elif self._held[who] < self.per_client:
                self._ready[who] = None
