"""Token buckets: the apps' rate limits (Soketi's ``maxBackendEventsPerSecond``,
``maxClientEventsPerSecond``, ``maxReadRequestsPerSecond``) and the PostgreSQL store's
budget of lookups of unseen keys. Bursts of one second's worth; refilled by elapsed time,
so nothing runs between requests."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` per second, ``burst`` at once (default: one second's worth)."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._at = time.monotonic()

    def take(self, count: float = 1.0) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True


class RateTable:
    """One bucket per app (by key) for one of its rates; a changed rate starts a new bucket.
    Bounded: past ``size`` apps the table starts again (a bucket is a second's memory)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, rate: float, count: float = 1.0) -> bool:
        """True when within ``rate`` (0: no bound, always True)."""
        if not rate:
            return True
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= self.size:
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(rate)
        return bucket.take(count)
