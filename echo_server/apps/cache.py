"""The database store's memory: a bounded LRU of apps, a bounded LRU of keys known to be
unknown, lookups of one key shared while in flight, and a budget of database misses.

Port 6001 is public, so whoever connects chooses the key looked up. Three things keep that
from reaching the database once per attempt: an unknown key is remembered (negative entry),
many attempts at one key wait for one query (single flight), and keys never seen before
spend a budget of misses per second (a token bucket) beyond which they are answered "cannot
tell now" without a query. Every entry is dropped on the table's NOTIFY for its key or id,
and all of them when the listening connection was lost (a NOTIFY may have been missed).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .model import App
from .rates import TokenBucket
from .store import AppsUnavailable

T = TypeVar("T")
_UNKNOWN = object()


class Lru(Generic[T]):
    """At most ``size`` entries, each for at most ``ttl`` seconds; the least recently used
    goes first."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str) -> T | None:
        item = self._items.get(name)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[name]
            return None
        self._items.move_to_end(name)
        return item[1]

    def put(self, name: str, value: T) -> None:
        self._items[name] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(name)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, name: str) -> None:
        self._items.pop(name, None)

    def clear(self) -> None:
        self._items.clear()


class MissBudget(TokenBucket):
    """``rate`` lookups of unseen keys per second, ``burst`` at once."""

    __slots__ = ()

    def __init__(self, rate: float, burst: float) -> None:
        super().__init__(rate, burst)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    size: int = 10_000  # apps remembered, per way of looking up (key, id)
    negative_size: int = 10_000  # unknown keys (and ids) remembered
    ttl: float = 300.0  # seconds; NOTIFY drops an entry at once, this bounds the rest
    negative_ttl: float = 60.0
    misses_per_second: float = 50.0  # database lookups of keys not remembered either way
    miss_burst: float = 100.0


@dataclass(slots=True)
class CacheStats:
    queries: int = 0  # lookups that reached the database
    hits: int = 0
    negative_hits: int = 0
    shared: int = 0  # lookups that waited for another's query
    over_budget: int = 0  # answered "cannot tell now" without a query
    # Reads of the apps that own Socket.IO endpoints: all of them at start and after a
    # reconnect, those of the keys a NOTIFY names otherwise; never one per handshake.
    listings: int = 0


class LookupCache:
    """Apps by one attribute (key or id): ``lookup`` answers from memory or runs ``fetch``
    once, under the budget."""

    def __init__(self, settings: CacheSettings, budget: MissBudget, stats: CacheStats) -> None:
        self.found: Lru[App] = Lru(settings.size, settings.ttl)
        self.unknown: Lru[object] = Lru(settings.negative_size, settings.negative_ttl)
        self.budget = budget
        self.stats = stats
        self._flights: dict[str, asyncio.Future[App | None]] = {}
        self.generation = 0  # bumped by clear(): a query begun before it is not kept

    def cached(self, name: str) -> tuple[App, ...] | None:
        """``(app,)`` or ``()`` (known not to exist) from memory, None when only a query
        can tell."""
        app = self.found.get(name)
        if app is not None:
            self.stats.hits += 1
            return (app,)
        if self.unknown.get(name) is not None:
            self.stats.negative_hits += 1
            return ()
        return None

    async def lookup(self, name: str, fetch: Callable[[str], Awaitable[App | None]]
                     ) -> App | None:
        known = self.cached(name)
        if known is not None:
            return known[0] if known else None
        flight = self._flights.get(name)
        if flight is not None:
            self.stats.shared += 1
            return await asyncio.shield(flight)
        if not self.budget.take():
            self.stats.over_budget += 1
            raise AppsUnavailable("too many lookups of unknown app keys: try again later")
        flight = asyncio.get_running_loop().create_future()
        self._flights[name] = flight
        generation = self.generation
        try:
            self.stats.queries += 1
            app = await fetch(name)
        except BaseException as error:
            # Those waiting for this query learn that it failed; a cancelled query is the
            # asker's own cancellation, not theirs.
            shared = error if isinstance(error, Exception) else AppsUnavailable(
                "the lookup was cancelled")
            flight.set_exception(shared)
            flight.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            flight.set_result(app)
            if generation == self.generation:  # no NOTIFY or reconnect cleared it meanwhile
                if app is None:
                    self.unknown.put(name, _UNKNOWN)
                else:
                    self.found.put(name, app)
            return app
        finally:
            if self._flights.get(name) is flight:
                del self._flights[name]

    def drop(self, name: str) -> None:
        self.found.drop(name)
        self.unknown.drop(name)
        # A query under way may have read the row before the change: its answer is not kept,
        # and whoever asks from now on (the change's own watchers first) runs a new one.
        if self._flights.pop(name, None) is not None:
            self.generation += 1

    def clear(self) -> None:
        self.found.clear()
        self.unknown.clear()
        self._flights.clear()
        self.generation += 1
