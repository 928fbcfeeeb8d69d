"""The HTTP side's resource bounds: timeouts, pipelining, write back-pressure, connections
per client address (docs/limits.md lists each with its default).

Timeouts are not a timer per connection: every HTTP connection carries one ``deadline``
(a float, 0 when none applies) and one sweep, a few times per shortest timeout, closes
the ones past it. Setting a deadline is an attribute write, which keeps a keep-alive
poll's request as cheap as before. A websocket leaves the sweep at its upgrade (its
liveness is the engine heartbeat's business) but keeps its place in the per-address count
until its socket closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from echo_common.counts import AddressCounts, client_key

from .addresses import TrustedProxies

LimitReporter = Callable[[str, str], None]
# asyncio's and uvloop's own default: a connection that keeps it costs no call to set it.
TRANSPORT_HIGH_WATER = 64 * 1024
# The largest message a client may send (socket.io's `maxHttpBufferSize`), and what an HTTP
# request body may carry beyond it (a polling POST frames its packets; the API's JSON).
MAX_PAYLOAD = 1_000_000
BODY_ALLOWANCE = 64 * 1024
# Bytes queued for one slow client (either wire) before it is dropped.
WRITE_HIGH_WATER = 4 * 1024 * 1024


@dataclass(slots=True)
class HttpLimits:
    max_body: int = MAX_PAYLOAD + BODY_ALLOWANCE
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0  # accept or first byte of a request -> its headers complete
    body_timeout: float = 30.0  # headers complete -> body complete; also a stalled reader
    keep_alive_timeout: float = 5.0  # idle between two requests (Node's default)
    max_pipeline: int = 16  # requests parsed ahead of the one being answered
    write_high_water: int = TRANSPORT_HIGH_WATER  # responses buffered before reading stops
    max_connections_per_address: int = 0  # 0: no bound
    # A refused request's lingering close: what still arrives is read and thrown away for
    # at most this long and this many bytes (RFC 9112 §9.6), then the connection closes.
    linger_timeout: float = 5.0
    linger_bytes: int = 16 * 1024 * 1024


class Timed(Protocol):
    deadline: float

    def timed_out(self) -> None: ...


class ConnectionGuard:
    """Owns the sweep and the per-address connection counts of one listening server."""

    def __init__(self, limits: HttpLimits, proxies: TrustedProxies | None = None,
                 report: LimitReporter | None = None) -> None:
        self.limits = limits
        self.proxies = proxies or TrustedProxies(())
        self.report: LimitReporter = report or (lambda kind, message: None)
        self.connections: set[Timed] = set()
        self.per_address = AddressCounts()
        self.max_per_address = limits.max_connections_per_address  # 0: not counted
        self._sweeper: asyncio.TimerHandle | None = None

    # -- per-address connections ---------------------------------------------------
    def admit(self, peer: str) -> bool:
        """Count a new TCP connection from ``peer``; False when that address is over its
        bound. A trusted proxy carries many clients and is never bounded here."""
        if self.proxies.trusts(peer):
            return True
        key = client_key(peer)  # an IPv6 client is its /64
        count = self.per_address.get(key, 0)
        if count >= self.max_per_address:
            self.report("too_many_connections",
                        f"connection from {peer} refused: {key} holds {count} already")
            return False
        self.per_address.add(key)
        return True

    def release(self, peer: str) -> None:
        self.per_address.remove(client_key(peer))

    # -- deadlines ------------------------------------------------------------------
    @property
    def sweep_interval(self) -> float:
        limits = self.limits
        shortest = min(limits.header_timeout, limits.body_timeout, limits.keep_alive_timeout,
                       limits.linger_timeout)
        return max(0.005, min(shortest / 4, 1.0))

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.sweep_interval,
                                                                  self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        self._sweeper = None
        try:
            self.sweep(time.monotonic())
        finally:
            self.start()

    def sweep(self, now: float) -> None:
        expired = [c for c in self.connections if 0.0 < c.deadline < now]
        for connection in expired:
            connection.timed_out()
