"""The HTTP side's resource bounds: timeouts, pipelining, write back-pressure, connections
per client address (docs/limits.md lists each with its default).

Timeouts are not a timer per connection: every HTTP connection carries one ``deadline``
(a float, 0 when none applies) and waits in the transport's ``Deadlines`` (one loop timer
for them all) for its next look, at its deadline or one shortest timeout after its last look,
whichever comes first. No phase can then end before the look that will see it, so beginning
a phase only writes its deadline (as a Pusher message writes when it was seen): a keep-alive
request moves no timer, and an idle connection is looked at once per shortest timeout at most,
and on time (a sweep over every connection, a quarter of the shortest timeout apart, was up to
that quarter late). A websocket leaves the schedule at its upgrade (its liveness is the engine
heartbeat's business) but keeps its place in the per-address count until its socket closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from echo_common.counts import AddressCounts, client_key

from .addresses import TrustedProxies
from .deadlines import TICK, Deadlines, Scheduled

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


class Timed(Scheduled, Protocol):
    deadline: float

    def timed_out(self) -> None: ...


class ConnectionGuard:
    """Owns the deadlines and the per-address connection counts of one listening server."""

    def __init__(self, limits: HttpLimits, proxies: TrustedProxies | None = None,
                 report: LimitReporter | None = None) -> None:
        self.limits = limits
        self.proxies = proxies or TrustedProxies(())
        self.report: LimitReporter = report or (lambda kind, message: None)
        self.deadlines = Deadlines(self._look)
        # A connection is looked at no later than this after its last look (or its start):
        # whatever phase begins in between ends after it.
        self.every = max(TICK, min(limits.header_timeout, limits.body_timeout,
                                   limits.keep_alive_timeout, limits.linger_timeout))
        self.per_address = AddressCounts()
        self.max_per_address = limits.max_connections_per_address  # 0: not counted

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
    def watch(self, connection: Timed) -> None:
        """Looked at from now on, until ``forget``."""
        self.deadlines.schedule(connection, time.monotonic() + self.every)

    def forget(self, connection: Timed) -> None:
        self.deadlines.cancel(connection)

    def stop(self) -> None:
        self.deadlines.stop()

    def _look(self, connection: Timed, now: float) -> None:
        deadline = connection.deadline
        if not deadline:  # being answered: nothing to time, but a phase may begin
            self.deadlines.schedule(connection, now + self.every)
        elif now >= deadline:
            connection.timed_out()  # closed, or its lingering close begins (watched anew)
        else:
            self.deadlines.schedule(connection, min(deadline, now + self.every))
