"""What presence announces converges to what presence stores.

An observer that stays subscribed builds its member list the way Echo does: ``here()`` from
``presence:subscribed``, then ``presence:joining`` adds and ``presence:leaving`` removes. While
100 other sockets subscribe, unsubscribe and reconnect at random, all at once (half of them
with a user of their own, half sharing ten users), announcements race with each other and with
the writes they report. Once everything has settled, the observer's list must be exactly the
users the HTTP API lists, which must be exactly the users of the sockets still subscribed: no
present user unannounced, no departed user still listed.

Raw Engine.IO 3 websockets stand in for the browsers (a hundred Node processes would not fit
the time bound). The operations, their pacing and how long each authorization takes are fixed
by a seed per round; the races the rounds meet by chance are also set up one by one below, in
the step where they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from channel_auth import AuthRequest, AuthResult
from echo_server.process.server import EchoServer
from tests.conftest import server_url
from tests.support.http import http_client
from tests.support.raw import OP_TEXT, RawWebSocket
from tests.support.waits import member_ids, wait_until
from tests.test_channel_auth import HeldStore

CHANNEL = "presence-room"
ROUNDS = 6
SOCKETS = 100
OPERATIONS = 500
PACE = 0.01  # the longest pause (s) between two operations of one tab
OBSERVER, MARKER = 0, 1  # the observer's user; the user of each instance's marker socket
# Heartbeats far beyond a round: the raw clients answer no pings.
SLOW_HEARTBEAT = {"socketio": {"pingInterval": 60_000, "pingTimeout": 60_000}}


class Backend:
    """Laravel's answer for presence channels (the user named in X-User-Id), after a number
    of loop turns drawn from the round's seed (an app server answers at its own pace), or once
    the test opens the gate: the test chooses the step in which an authorization lands."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    async def authorize(self, request: AuthRequest) -> AuthResult:
        self.waiting += 1
        try:
            for _ in range(self.rng.randrange(3)):
                await asyncio.sleep(0)
            await self.gate.wait()
        finally:
            self.waiting -= 1
        user_id = json.loads(request.headers["X-User-Id"])
        return AuthResult(200, {"user_id": user_id, "user_info": {"name": f"user {user_id}"}})


@dataclass
class PresenceTab:
    """One browser tab on the presence channel, over a raw EIO3 websocket; it keeps Echo's
    member list from what it is told."""

    user: int
    server: EchoServer
    ws: RawWebSocket | None = None
    socket_id: str = ""
    subscribed: bool = False  # what the tab asked for last
    users: set[Any] | None = None  # None until its presence:subscribed
    whispers: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    async def connect(self, server: EchoServer | None = None) -> None:
        self.server = server or self.server
        self.ws = await RawWebSocket.connect(self.server)
        opened = await self.ws.recv_text()
        assert opened.startswith("0"), opened
        self.socket_id = json.loads(opened[1:])["sid"]
        assert await self.ws.recv_text() == "40"
        self.users = None
        self.reader = asyncio.ensure_future(self._read(self.ws))

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        assert self.ws is not None
        self.ws.send_text("42" + json.dumps([event, payload]))

    def subscribe(self) -> None:
        self.subscribed = True
        self._emit("subscribe", {"channel": CHANNEL,
                                 "auth": {"headers": {"X-User-Id": json.dumps(self.user)}}})

    def unsubscribe(self) -> None:
        self.subscribed = False
        self._emit("unsubscribe", {"channel": CHANNEL})

    def whisper(self, data: Any) -> None:
        self._emit("client event", {"channel": CHANNEL, "event": "client-marker", "data": data})

    def cut(self) -> None:
        """The end of the TCP stream, sent now (closing the transport sends it a step later)."""
        assert self.ws is not None
        self.ws.writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)

    async def drop(self) -> None:
        """The network goes away: no Socket.IO disconnect packet, just the end of the TCP
        stream (the server sees the transport close)."""
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self.reader
        self.ws = self.reader = None

    async def reconnect(self, server: EchoServer) -> None:
        """Echo after a dropped connection: a new socket, and its channels again."""
        await self.drop()
        await self.connect(server)
        if self.subscribed:
            self.subscribe()

    async def _read(self, ws: RawWebSocket) -> None:
        while True:
            opcode, payload = await ws.recv_frame(timeout=600)
            if opcode == -1:
                return
            if opcode != OP_TEXT or not payload.startswith(b"42"):
                continue
            event, *args = json.loads(payload[2:])
            if event == "presence:subscribed":
                self.users = {member["user_id"] for member in args[1]}
            elif event == "presence:joining" and self.users is not None:
                self.users.add(args[1]["user_id"])
            elif event == "presence:leaving" and self.users is not None:
                self.users.discard(args[1]["user_id"])
            elif event == "client-marker":
                self.whispers.put_nowait(args[1])


async def _api_users(http: aiohttp.ClientSession, server: EchoServer) -> set[Any]:
    url = f"{server_url(server)}/apps/test-app/channels/{CHANNEL}/users?auth_key=test-key"
    async with http.get(url) as response:
        assert response.status == 200
        return {user["id"] for user in (await response.json())["users"]}


async def _settled(servers: list[EchoServer], tabs: list[PresenceTab]) -> None:
    """Every authorization answered, every dropped connection seen, every presence write and
    announcement done on every instance."""
    live = {tab.socket_id for tab in tabs if tab.ws is not None}

    def quiet() -> bool:
        sockets = [s for server in servers for s in server.core.connections.values()]
        return ({s.id for s in sockets} == live
                and not any(s.state.pending for s in sockets))

    await wait_until(quiet, "every operation handled", timeout=10)
    for server in servers:
        await server.core.drain()


async def _churn(tabs: list[PresenceTab], servers: list[EchoServer], seed: int) -> None:
    """OPERATIONS random operations over the tabs, each tab's in its own order, all tabs at
    once; a reconnect may land on another instance, as behind a load balancer. The pauses
    only spread the operations (nothing is awaited by them): many overlap in flight."""
    rng = random.Random(seed)
    plans: list[list[tuple[str, EchoServer, float]]] = [[] for _ in tabs]
    for _ in range(OPERATIONS):
        plans[rng.randrange(len(tabs))].append(
            (rng.choice(("subscribe", "unsubscribe", "reconnect")), rng.choice(servers),
             rng.uniform(0, PACE)))

    async def run(tab: PresenceTab, plan: list[tuple[str, EchoServer, float]]) -> None:
        for op, server, pause in plan:
            await asyncio.sleep(pause)
            if op == "subscribe":
                tab.subscribe()
            elif op == "unsubscribe":
                tab.unsubscribe()
            else:
                await tab.reconnect(server)

    await asyncio.gather(*(run(tab, plan) for tab, plan in zip(tabs, plans, strict=True)))


async def _converges(servers: list[EchoServer], seed: int) -> None:
    http = http_client()
    observer = PresenceTab(OBSERVER, servers[0])
    markers = [PresenceTab(MARKER, server) for server in servers]
    users = [*range(100, 100 + SOCKETS // 2)] + [200 + n % 10 for n in range(SOCKETS // 2)]
    tabs = [PresenceTab(user, servers[n % len(servers)]) for n, user in enumerate(users)]
    try:
        for tab in (observer, *markers):
            await tab.connect()
            tab.subscribe()
        await wait_until(lambda: all(t.users is not None for t in (observer, *markers)),
                         "the observer's here()")
        await asyncio.gather(*(tab.connect() for tab in tabs))

        await _churn(tabs, servers, seed)
        await _settled(servers, [observer, *markers, *tabs])
        # Each instance's marker whispers last: when the observer has heard them, it has
        # heard every announcement made before them (one connection, one relay, in order).
        for n, marker in enumerate(markers):
            marker.whisper(n)
        assert sorted([await asyncio.wait_for(observer.whispers.get(), 5)
                       for _ in markers]) == list(range(len(markers)))

        subscribed = {tab.user for tab in (observer, *markers, *tabs) if tab.subscribed}
        listed = await _api_users(http, servers[0])
        assert listed == subscribed, (f"seed {seed}: listed but gone "
                                      f"{sorted(listed - subscribed)}, not listed "
                                      f"{sorted(subscribed - listed)}")
        assert observer.users is not None
        assert observer.users == listed, (
            f"seed {seed}: never announced {sorted(listed - observer.users)}, "
            f"never announced leaving {sorted(observer.users - listed)}")
    finally:
        for tab in (observer, *markers, *tabs):
            await tab.drop()
        await http.close()


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


def _options(prefix: str, database: str) -> dict[str, Any]:
    return {**SLOW_HEARTBEAT, "database": database,
            "databaseConfig": {"redis": {"keyPrefix": prefix}}}


@pytest.mark.parametrize("database", ["sqlite", "redis"])
async def test_announcements_converge_on_one_instance(make_server, prefix: str,
                                                      database: str) -> None:
    """``sqlite`` is the reference's name for presence kept in memory."""
    for seed in range(ROUNDS):
        server = await make_server(_options(f"{prefix}{seed}_", database),
                                   authorizer=Backend(seed))
        await _converges([server], seed)


async def test_announcements_converge_across_two_instances(make_server, prefix: str) -> None:
    """Two instances on one Redis, the tabs spread over both and moving between them on
    reconnect; the observer on the first hears the second's announcements through the relay,
    later than its own instance's."""
    for seed in range(ROUNDS):
        options = _options(f"{prefix}{seed}_", "redis")
        servers = [await make_server(options, authorizer=Backend(seed)) for _ in range(2)]
        assert all(server.cluster is not None for server in servers)
        await _converges(servers, seed)


@pytest.mark.parametrize("database", ["sqlite", "redis"])
@pytest.mark.parametrize("moment", ["authorized", "written"])
@pytest.mark.parametrize("leave", ["unsubscribe", "drop"])
async def test_member_leaving_as_it_subscribes_again(make_server, prefix: str, database: str,
                                                     moment: str, leave: str) -> None:
    """A member's tab subscribes again and leaves just then: in the very step its second
    authorization lands, or while that second presence write is in flight. Its user is gone,
    and the observer hears it leave (it had heard it join)."""
    backend = Backend()
    server = await make_server(_options(prefix, database), authorizer=backend)
    observer, tab = PresenceTab(OBSERVER, server), PresenceTab(7, server)
    try:
        for each in (observer, tab):
            await each.connect()
            each.subscribe()
        await wait_until(lambda: observer.users == {OBSERVER, 7}, "the observer hears user 7")
        held = HeldStore(server.core.presence.store, "after")
        if moment == "written":
            server.core.presence.store = held
        else:
            backend.gate.clear()
        tab.subscribe()
        if moment == "written":
            await wait_until(lambda: held.entered == 1, "the second write in flight")
        else:
            await wait_until(lambda: backend.waiting == 1, "the second authorization")
            backend.gate.set()  # lands in the next step, with what the tab sends now
        gone_id = tab.socket_id
        if leave == "unsubscribe":
            tab.unsubscribe()
        else:
            tab.cut()
        if moment == "written":
            await wait_until(lambda: gone_id not in member_ids(server, CHANNEL),
                             "the tab gone from the channel")
            held.release.set()
        await wait_until(lambda: observer.users == {OBSERVER}, "the observer hears user 7 leave")
        await server.core.drain()
        assert [m.user_id for m in await server.core.presence.store.members(CHANNEL)] == [OBSERVER]
    finally:
        for each in (observer, tab):
            await each.drop()
