"""One pool of connections to ``/broadcasting/auth`` for every client, shared fairly.

A security review found that 20 anonymous sockets keeping 100 private subscriptions each in
flight to a slow app starved everybody: waiting for one of the pool's connections counted
against the 10 s auth timeout, so a legitimate subscribe failed with status 0. Here a real
aiohttp backend (tests/support/auth_backend.py) is slow for the flood only, and real
servers and sockets do the subscribing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channel_auth import AuthRequest
from channel_auth.fair import FairSlots
from channel_auth.http_callback import HttpCallbackAuthorizer
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.closing import closing_each
from tests.support.http import http_client
from tests.support.waits import server_socket, wait_member, wait_until

# Raw EIO3 sockets send no pings: the default heartbeat keeps them open for the test.
DEFAULT_PING = {"pingInterval": 25000, "pingTimeout": 20000}


def _request(channel: str, who: str | None = None) -> AuthRequest:
    return AuthRequest(channel=channel, socket_id="1.1", who=who)


def _held(release: asyncio.Event) -> Any:
    """A rule answering 200 once ``release`` is set: the app is slow for this channel."""
    async def answer(call: AuthCall) -> bool:
        await release.wait()
        return True
    return answer


def _slow(seconds: float) -> Any:
    async def answer(call: AuthCall) -> bool:
        await asyncio.sleep(seconds)  # the app's own latency, not a wait of the test
        return True
    return answer


@pytest.fixture
async def authorizers() -> AsyncIterator[list[HttpCallbackAuthorizer]]:
    async with closing_each() as made:
        yield made


# --------------------------------------------------------------------------- the authorizer

async def test_waiting_for_a_connection_is_not_the_request_timeout(
        auth_backend: AuthBackend, authorizers: list[HttpCallbackAuthorizer]) -> None:
    """With one connection, the second and third requests wait for the first; each still
    gets its whole ``timeout`` once it has the connection (it used to run out while it
    waited, and the client got status 0 from an app that answers in time)."""
    authorizer = HttpCallbackAuthorizer([auth_backend.url], "/broadcasting/auth",
                                        timeout=0.5, max_connections=1)
    authorizers.append(authorizer)
    auth_backend.rules["private-a"] = _slow(0.3)
    auth_backend.rules["private-b"] = _slow(0.3)
    auth_backend.allow_private("private-c")
    results = await asyncio.gather(*(authorizer.authorize(_request(f"private-{name}"))
                                     for name in "abc"))
    assert [(r.status, r.reason) for r in results] == [(200, None)] * 3
    assert [c.channel for c in auth_backend.calls] == ["private-a", "private-b", "private-c"]


async def test_one_client_holds_a_bounded_share(
        auth_backend: AuthBackend, authorizers: list[HttpCallbackAuthorizer]) -> None:
    """A client with many slow requests holds at most its share of the connections; the
    rest of its requests wait (or, over its bound of waiting ones, are refused with 429
    without asking the app), and another client is answered at once meanwhile."""
    authorizer = HttpCallbackAuthorizer(
        [auth_backend.url], "/broadcasting/auth", timeout=5, max_connections=4,
        max_connections_per_client=2, max_pending_per_client=5, queue_timeout=5)
    authorizers.append(authorizer)
    release = asyncio.Event()
    for n in range(6):
        auth_backend.rules[f"private-flood-{n}"] = _held(release)
    auth_backend.allow_private("private-mine")
    flood = [asyncio.ensure_future(authorizer.authorize(_request(f"private-flood-{n}", "a")))
             for n in range(6)]
    await auth_backend.wait_calls(2)
    refused = await flood[5]
    assert (refused.status, refused.reason) == (
        429, "5 requests of this client are in flight or waiting")

    mine = await authorizer.authorize(_request("private-mine", "b"))
    assert mine.status == 200
    # (The first two raced each other to the app: either may arrive first.)
    assert sorted(c.channel for c in auth_backend.calls[:2]) == [
        "private-flood-0", "private-flood-1"]
    assert [c.channel for c in auth_backend.calls[2:]] == ["private-mine"]

    release.set()
    assert [r.status for r in await asyncio.gather(*flood[:5])] == [200] * 5
    assert authorizer.slots.free == 4


async def test_freed_connections_go_round_robin(
        auth_backend: AuthBackend, authorizers: list[HttpCallbackAuthorizer]) -> None:
    """A client with one request waits for one turn of the others, not for their backlog:
    "b" asked after three more requests of "a" were waiting, and is answered before them."""
    authorizer = HttpCallbackAuthorizer(
        [auth_backend.url], "/broadcasting/auth", timeout=5, max_connections=1,
        max_connections_per_client=1, queue_timeout=5)
    authorizers.append(authorizer)
    release = asyncio.Event()
    auth_backend.rules["private-a1"] = _held(release)
    for name in ("a2", "a3", "a4", "b1"):
        auth_backend.allow_private(f"private-{name}")
    asked = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("a4", "a"), ("b1", "b")]
    tasks = [asyncio.ensure_future(authorizer.authorize(_request(f"private-{name}", who)))
             for name, who in asked]
    await auth_backend.wait_calls(1)
    release.set()
    assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 5
    assert [c.channel for c in auth_backend.calls] == [
        "private-a1", "private-b1", "private-a2", "private-a3", "private-a4"]


async def test_no_connection_in_time_is_503_not_a_timeout_of_the_app(
        auth_backend: AuthBackend, authorizers: list[HttpCallbackAuthorizer]) -> None:
    authorizer = HttpCallbackAuthorizer([auth_backend.url], "/broadcasting/auth", timeout=5,
                                        max_connections=1, queue_timeout=0.1)
    authorizers.append(authorizer)
    release = asyncio.Event()
    auth_backend.rules["private-slow"] = _held(release)
    auth_backend.allow_private("private-mine")
    slow = asyncio.ensure_future(authorizer.authorize(_request("private-slow", "a")))
    await auth_backend.wait_calls(1)
    mine = await authorizer.authorize(_request("private-mine", "b"))
    assert (mine.status, mine.reason) == (503, "no free connection within 0.1 s")
    release.set()
    assert (await slow).status == 200
    assert [c.channel for c in auth_backend.calls] == ["private-slow"]
    assert authorizer.slots.free == 1


async def test_a_cancelled_wait_gives_its_turn_away(
        auth_backend: AuthBackend, authorizers: list[HttpCallbackAuthorizer]) -> None:
    """A socket that goes away cancels its pending authorizations: waiting ones leave the
    line, and the connection goes to the next in line."""
    authorizer = HttpCallbackAuthorizer([auth_backend.url], "/broadcasting/auth", timeout=5,
                                        max_connections=1, queue_timeout=5)
    authorizers.append(authorizer)
    release = asyncio.Event()
    auth_backend.rules["private-slow"] = _held(release)
    auth_backend.allow_private("private-mine")
    slow = asyncio.ensure_future(authorizer.authorize(_request("private-slow", "a")))
    await auth_backend.wait_calls(1)
    gone = asyncio.ensure_future(authorizer.authorize(_request("private-gone", "c")))
    mine = asyncio.ensure_future(authorizer.authorize(_request("private-mine", "b")))
    await asyncio.sleep(0)  # both are in line now
    gone.cancel()
    release.set()
    assert (await slow).status == 200
    assert (await mine).status == 200
    assert gone.cancelled()
    assert [c.channel for c in auth_backend.calls] == ["private-slow", "private-mine"]
    assert authorizer.slots.free == 1


async def test_a_waiter_cancelled_as_its_turn_comes_passes_it_on() -> None:
    """The slot is handed to "c" in the same loop turn as "c" is cancelled (its socket
    went away): "c" gives it straight on to "b", and no slot is lost."""
    slots = FairSlots(1, per_client=1, max_pending=10, wait_timeout=5)
    release = asyncio.Event()
    served: list[str] = []

    async def use(who: str, hold: asyncio.Event | None = None) -> None:
        async with slots.slot(who):
            served.append(who)
            if hold is not None:
                await hold.wait()

    holder = asyncio.ensure_future(use("a", release))
    await wait_until(lambda: served == ["a"], "a holds the slot")
    cancelled = asyncio.ensure_future(use("c"))
    waiting = asyncio.ensure_future(use("b"))
    await asyncio.sleep(0)  # one turn: both tasks run into the line
    release.set()  # "a" wakes first and hands the slot to "c" ...
    cancelled.cancel()  # ... whose task is cancelled before it runs again
    await holder
    await waiting
    assert cancelled.cancelled()
    assert served == ["a", "b"]
    assert slots.free == 1


# --------------------------------------------------------------------------- the server

class RawSocket:
    """An EIO3 websocket from a chosen local address, collecting ``subscription_error``."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 sid: str) -> None:
        self.http = http
        self.ws = ws
        self.sid = sid
        self.errors: list[list[Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, server: EchoServer, local_address: str) -> RawSocket:
        http = http_client(
            connector=aiohttp.TCPConnector(local_addr=(local_address, 0)))
        ws = await http.ws_connect(
            f"ws://127.0.0.1:{server.port}/socket.io/?EIO=3&transport=websocket",
            autoping=False)
        sid = json.loads((await ws.receive_str())[1:])["sid"]
        assert await ws.receive_str() == "40"
        return cls(http, ws, sid)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT and message.data.startswith("42"):
                event = json.loads(message.data[2:])
                if event[0] == "subscription_error":
                    self.errors.append(event[1:])

    async def subscribe(self, *channels: str) -> None:
        for channel in channels:
            await self.ws.send_str("42" + json.dumps(["subscribe", {"channel": channel}]))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await self.http.close()


@pytest.fixture
async def sockets() -> AsyncIterator[list[RawSocket]]:
    async with closing_each() as made:
        yield made


def _pending(server: EchoServer, sid: str) -> int:
    return len(server_socket(server, sid).state.pending or {})


async def test_a_flooding_client_does_not_starve_another(
        make_server: ServerFactory, auth_backend: AuthBackend,
        sockets: list[RawSocket]) -> None:
    """The review's attack, scaled to one socket: 100 private subscriptions held in flight
    by an app that is slow for them took all 100 connections, and another client's
    subscribe waited behind them until the auth timeout. Now the flood holds its share (25)
    and the other client is answered at once; the flood is served when the app answers."""
    server = await make_server({"authHost": auth_backend.url, "authTimeout": 5000,
                                "socketio": {**DEFAULT_PING, "maxPendingAuthPerSocket": 200}},
                               redis=False)
    release = asyncio.Event()
    flood = [f"private-flood-{n}" for n in range(100)]
    for channel in flood:
        auth_backend.rules[channel] = _held(release)
    auth_backend.allow_private("private-mine")

    attacker = await RawSocket.connect(server, "127.0.0.1")
    sockets.append(attacker)
    await attacker.subscribe(*flood)
    await wait_until(lambda: _pending(server, attacker.sid) == 100, "the flood is in flight")
    await auth_backend.wait_calls(25)

    # Another address: the other client stays another client once handshakes carry it.
    user = await RawSocket.connect(server, "127.0.0.2")
    sockets.append(user)
    await user.subscribe("private-mine")
    await wait_member(server, "private-mine", user.sid, timeout=2.0)
    assert user.errors == []
    assert len(auth_backend.calls) == 26  # the flood's 25 and the user's one

    release.set()
    await wait_until(lambda: len(server_socket(server, attacker.sid).state.channels) == 100,
                     "the flood is served")
    assert attacker.errors == []


async def test_over_its_bound_a_client_is_refused_429(
        make_server: ServerFactory, auth_backend: AuthBackend,
        sockets: list[RawSocket]) -> None:
    server = await make_server({"authHost": auth_backend.url, "authTimeout": 5000,
                                "authMaxConnectionsPerAddress": 2,
                                "authMaxPendingPerAddress": 3,
                                "socketio": DEFAULT_PING}, redis=False)
    release = asyncio.Event()
    flood = [f"private-flood-{n}" for n in range(5)]
    for channel in flood:
        auth_backend.rules[channel] = _held(release)
    attacker = await RawSocket.connect(server, "127.0.0.1")
    sockets.append(attacker)
    await attacker.subscribe(*flood)
    await wait_until(lambda: len(attacker.errors) == 2, "two refusals")
    assert attacker.errors == [["private-flood-3", 429], ["private-flood-4", 429]]
    assert len(await auth_backend.wait_calls(2)) == 2
    assert server.errors.counts.get("auth_failed") == 2

    release.set()
    await wait_until(lambda: len(server_socket(server, attacker.sid).state.channels) == 3,
                     "the three in line are served")
