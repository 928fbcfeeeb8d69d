"""What a wire protocol declares to be served, so the server routes to it without knowing it.

A protocol is its routes (plain HTTP requests it answers, held or not), its upgrade paths
(the websockets it takes over), what it starts, stops and closes, how it takes a reload, and
its connections by kind for the figures. Its per-connection writer is its
``core.connection.Wire``: the connections it opens in the core carry it, and fan-out hands
every event to it as one pre-built frame, as for the others. The server only walks these
declarations where it used to branch on a path (a route, an upgrade), so nothing is added
per delivered message.

Every protocol, Socket.IO and Pusher too, is built by a ``ProtocolFactory`` from an
``Assembly`` (what it may take from the process, never the server object) and listed in
``adapters/registry.py``; ``server.py`` does not change for one more
(tests/support/sse_adapter.py is the smallest honest one: server-sent events on public
channels).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from channel_auth.rules import ChannelRule

from ..apps.authorizers import CallbackSettings
from ..apps.model import App
from ..apps.postgres import PostgresSettings
from ..apps.seats import AppSeats
from ..apps.store import AppStore
from ..core.channels import ChannelCore, ErrorReporter
from ..transport.engine import EngineOptions
from ..transport.http import Handler, UpgradeHandler
from .pusher.settings import PusherTimeouts

PathTest = Callable[[str], bool]


class Settings(CallbackSettings, Protocol):
    """The configuration as the protocols read it, once built and at every reload
    (``config.Config`` is one: each room's settings module reads its keys). A protocol that
    reads more names it here."""

    # Socket.IO: its engine, its path, the apps' index; isolated apps' /broadcasting/auth
    # takes the callback's settings (``CallbackSettings``).
    @property
    def engine_options(self) -> EngineOptions: ...
    @property
    def socketio_path(self) -> str: ...
    @property
    def app_manager(self) -> PostgresSettings | None: ...
    # Pusher: its bounds and timeouts, the local channel rules, which socket ids.
    @property
    def max_http_buffer_size(self) -> int: ...
    @property
    def write_buffer_high_water(self) -> int: ...
    @property
    def pusher_timeouts(self) -> PusherTimeouts: ...
    @property
    def channel_rules(self) -> list[ChannelRule]: ...
    @property
    def pusher_socket_ids(self) -> bool: ...
    # Both: `socketio.origins`.
    def origin_allowed(self, origin: str | None) -> bool: ...


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


async def _nothing_to_wait_for() -> None:
    return None


def _none() -> Counter[tuple[str, str]]:
    return Counter()


def _unchanged(settings: Settings) -> Callable[[], None]:
    return _nothing


@dataclass(frozen=True, slots=True)
class Served:
    name: str
    routes: tuple[Route, ...] = ()
    upgrades: tuple[Upgrade, ...] = ()
    # Before the server is ready, awaited: what it must read first (the apps' endpoints).
    start: Callable[[], Awaitable[None]] = _nothing_to_wait_for
    # The server is stopping: no more connections, and every one it has closes.
    stop: Callable[[], None] = _nothing
    # Then what it still holds (tasks, pools), released; the server bounds the wait.
    close: Callable[[], Awaitable[None]] = _nothing_to_wait_for
    # A reload: reads what it needs of the new settings (an error refuses the reload whole,
    # nothing applied) and returns what applies it, which cannot fail: the reload calls
    # every protocol's with no await between them (process/reload.py).
    reconfigure: Callable[[Settings], Callable[[], None]] = _unchanged
    # (protocol, transport) -> connections, for the status page and metrics.
    connections: Callable[[], Counter[tuple[str, str]]] = _none
    # The objects it is made of, for tests and tools to look into (``EchoServer.part``);
    # the server never does.
    parts: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Assembly:
    """What a protocol is built from: the core it speaks to, where its errors go, the
    settings it reads, and what the process shares between protocols: the apps of every
    store, their open connections (``seats``: over the workers, and as the other instances
    last told), the hook told of each app that admits a client (a database app's
    webhooks start then), and where the files handed to browsers are."""

    core: ChannelCore
    report_error: ErrorReporter
    settings: Settings
    apps: AppStore
    seats: AppSeats
    static: Path
    on_app: Callable[[App], None] | None = None


ProtocolFactory = Callable[[Assembly], Served]
