"""What a wire protocol declares to be served, so the server routes to it without knowing it.

A protocol is its routes (plain HTTP requests it answers, held or not), its upgrade paths
(the websockets it takes over), what it starts and stops, and its connections by kind for
the figures. Its per-connection writer is its ``core.connection.Wire``: the connections it
opens in the core carry it, and fan-out hands every event to it as one pre-built frame, as
for the others. The server only walks these declarations where it used to branch on a path
(a route, an upgrade), so nothing is added per delivered message.

A protocol beyond Socket.IO and Pusher is a module with a ``ProtocolFactory`` and one line in
``adapters/registry.py``; ``server.py`` does not change (tests/support/sse_adapter.py is the
smallest honest one: server-sent events on public channels).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..core.channels import ChannelCore, ErrorReporter
from ..transport.http import Handler, UpgradeHandler

PathTest = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Route:
    matches: PathTest
    handle: Handler
    # Answered before start-up is done (a static file); the others get 503 until then.
    while_starting: bool = False


@dataclass(frozen=True, slots=True)
class Upgrade:
    matches: PathTest
    handle: UpgradeHandler


def _nothing() -> None:
    return None


def _none() -> Counter[tuple[str, str]]:
    return Counter()


@dataclass(frozen=True, slots=True)
class Served:
    name: str
    routes: tuple[Route, ...] = ()
    upgrades: tuple[Upgrade, ...] = ()
    start: Callable[[], None] = _nothing
    # The server is stopping: no more connections, and every one it has closes.
    stop: Callable[[], None] = _nothing
    # (protocol, transport) -> connections, for the status page and metrics.
    connections: Callable[[], Counter[tuple[str, str]]] = _none


@dataclass(frozen=True, slots=True)
class Assembly:
    """What a protocol is built from: the core it speaks to, and where its errors go."""

    core: ChannelCore
    report_error: ErrorReporter


ProtocolFactory = Callable[[Assembly], Served]
