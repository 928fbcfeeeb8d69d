"""Engine.IO 4 / Socket.IO protocol 5 framing, as socket.io-client 3.x/4.x sees it on the wire.

Protocol sheet §10 and the public engine.io-protocol v4 / socket.io-protocol v5 specifications:
the server pings, polling payloads are joined by the record separator, the client connects
to `/` itself and gets a namespace socket id distinct from the engine sid.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from broadcaster.event import BroadcastEvent
from echo_server.process.server import EchoServer
from echo_server.transport.engine import EngineServer
from echo_server.transport.sockets import SocketServer
from tests.conftest import ServerFactory, laravel_message, server_url
from tests.support.raw import (
    RS,
    Polling,
    RawWebSocket,
    open_ws,
    wait_until,
    ws_closed,
    ws_recv,
)

Http = aiohttp.ClientSession
OPEN_KEYS = ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
UNKNOWN_SID_BODY = b'{"code":1,"message":"Session ID unknown"}'
# For tests where a server ping landing on a held poll would be a race, not the point.
SLOW_PINGS = {"socketio": {"pingInterval": 5000, "pingTimeout": 5000}}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def connect_sid(packet: str) -> str:
    assert packet.startswith("40{"), packet
    data = json.loads(packet[2:])
    assert list(data) == ["sid"], data
    return str(data["sid"])


async def subscribed(server: EchoServer, channel: str, count: int = 1) -> None:
    await wait_until(lambda: server.core.rooms.count(channel) >= count,
                     message=f"{count} member(s) in {channel!r}")


async def connected_polling(http: Http, server: EchoServer) -> tuple[Polling, str]:
    client = Polling(http, server_url(server), eio=4)
    await client.handshake()
    await client.post("40")
    packet, _ = await client.get_until(lambda p: p.startswith("40"))
    return client, connect_sid(packet)


async def connected_ws(http: Http, server: EchoServer,
                       channel: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """An EIO4 websocket client connected to `/`; returns it and its namespace sid."""
    ws = await open_ws(http, server_url(server), eio=4)
    assert (await ws_recv(ws)).startswith("0{")
    await ws.send_str("40")
    nsp_sid = connect_sid(await ws_recv(ws, pong=True))
    if channel is not None:
        before = server.core.rooms.count(channel)
        await ws.send_str(f'42["subscribe",{{"channel":{json.dumps(channel)}}}]')
        await subscribed(server, channel, before + 1)
    return ws, nsp_sid


# --------------------------------------------------------------------------- handshake


async def test_polling_handshake_has_only_the_open_packet(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server({"socketio": {"maxHttpBufferSize": 5000}}, redis=False)
    client = Polling(http, server_url(server), eio=4)
    reply, packets = await client.handshake()
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert reply.text.startswith("0{") and RS not in reply.text  # no length prefix, no `40`
    assert packets == [reply.text]
    data = client.open_data
    assert data is not None and list(data) == OPEN_KEYS
    assert data["upgrades"] == ["websocket"]
    assert (data["pingInterval"], data["pingTimeout"], data["maxPayload"]) == (400, 400, 5000)
    assert client.sid not in server.core.connections  # not connected to `/` until it asks

    # What comes next is the server's ping, still no `40`.
    assert await client.get() == ["2"]


async def test_polling_connect_gets_a_namespace_sid(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client, nsp_sid = await connected_polling(http, server)
    assert nsp_sid != client.sid
    assert nsp_sid in server.core.connections
    assert client.sid not in server.core.connections
    assert server.core.connections[nsp_sid].session.sid == client.sid


async def test_connect_with_auth_payload(
    make_server: ServerFactory, http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server(redis=False)
    seen: list[Any] = []
    original = server.part(SocketServer).handler.on_connect

    def on_connect(socket: Any, auth: Any) -> Any:
        seen.append(auth)
        return original(socket, auth)

    monkeypatch.setattr(server.part(SocketServer).handler, "on_connect", on_connect)
    ws = await open_ws(http, server_url(server), eio=4)
    assert (await ws_recv(ws)).startswith("0{")
    await ws.send_str('40{"token":"x"}')
    nsp_sid = connect_sid(await ws_recv(ws, pong=True))
    assert seen == [{"token": "x"}]
    assert nsp_sid in server.core.connections
    await ws.close()


async def test_events_before_connect_close_the_connection(make_server: ServerFactory,
                                                          http: Http) -> None:
    """socket.io 4 closes a client that emits before its CONNECT ("invalid state");
    socket.io-client never does (it holds emits until connected)."""
    server = await make_server(redis=False)
    client = Polling(http, server_url(server), eio=4)
    await client.handshake()
    await client.post('42["subscribe",{"channel":"early"}]', "40")
    await wait_until(lambda: client.sid not in server.part(EngineServer).sessions,
                     message="the session closed")
    assert server.core.rooms.count("early") == 0
    assert not server.core.connections
    assert server.errors.counts["bad_frame"] == 1
    reply = await client.get_reply()
    assert reply.status == 400 and reply.json()["code"] == 1  # unknown session


@pytest.mark.parametrize("packet", ["2", "40"])
async def test_client_ping_or_second_connect_closes_the_connection(
        make_server: ServerFactory, http: Http, packet: str) -> None:
    """Engine.IO 4: a client ping is an "invalid heartbeat direction"; socket.io 4: a
    CONNECT on a connected namespace is an invalid state. Both end that connection,
    and only that one."""
    server = await make_server(SLOW_PINGS, redis=False)
    ws, nsp_sid = await connected_ws(http, server, channel="c")
    other, _ = await connected_ws(http, server, channel="c")
    await ws.send_str(packet)
    message = await ws.receive(timeout=3)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await wait_until(lambda: nsp_sid not in server.core.connections, message="the socket left")
    assert server.core.rooms.count("c") == 1
    assert server.errors.counts["bad_frame"] == 1
    server.publish(BroadcastEvent("c", "still", "1"))
    assert await ws_recv(other) == '42["still","c",1]'
    await other.close()


async def test_polling_records_are_joined_by_record_separator(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(SLOW_PINGS, redis=False)
    client, _ = await connected_polling(http, server)
    await client.post('42["subscribe",{"channel":"c"}]')
    await subscribed(server, "c")
    server.publish(BroadcastEvent("c", "one", '{"s":"😀 𝄞"}'))
    server.publish(BroadcastEvent("c", "two", "2"))
    session = server.part(EngineServer).sessions[client.sid]
    await wait_until(lambda: len(session.queue) == 2, message="both events queued")
    reply = await client.get_reply()
    assert reply.body == ('42["one","c",{"s":"😀 𝄞"}]' + RS + '42["two","c",2]').encode()


async def test_websocket_open_packet(make_server: ServerFactory, http: Http) -> None:
    server = await make_server({"socketio": {"maxHttpBufferSize": 5000}}, redis=False)
    ws = await open_ws(http, server_url(server), eio=4)
    opened = await ws_recv(ws)
    assert opened.startswith("0{")
    data = json.loads(opened[1:])
    assert list(data) == OPEN_KEYS
    assert data["upgrades"] == []
    assert data["maxPayload"] == 5000
    # Nothing but pings until the client connects.
    assert await ws_recv(ws) == "2"
    await ws.send_str("3")
    await ws.send_str("40")
    nsp_sid = connect_sid(await ws_recv(ws, pong=True))
    assert nsp_sid != data["sid"]
    await ws.close()


# --------------------------------------------------------------------------- heartbeat


async def test_server_pings_websocket_and_drops_a_silent_client(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(redis=False)
    ws, nsp_sid = await connected_ws(http, server)
    pings: list[float] = []
    while len(pings) < 3:
        assert await ws_recv(ws, timeout=2) == "2"
        pings.append(time.monotonic())
        await ws.send_str("3")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.3 <= gap <= 1.2 for gap in gaps), gaps  # every pingInterval (0.4 s)
    assert nsp_sid in server.core.connections

    # Now the client stops answering.
    assert await ws_recv(ws, timeout=2) == "2"
    unanswered = time.monotonic()
    assert await ws_closed(ws, timeout=3) == []
    elapsed = time.monotonic() - unanswered
    assert 0.3 <= elapsed <= 2.0, elapsed  # pingTimeout (0.4 s)
    assert nsp_sid not in server.core.connections


async def test_server_pings_polling_and_drops_a_silent_client(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(redis=False)
    client, nsp_sid = await connected_polling(http, server)
    for _ in range(2):
        assert await client.get() == ["2"]
        await client.post("3")
    assert client.sid in server.part(EngineServer).sessions

    assert await client.get() == ["2"]
    unanswered = time.monotonic()
    await wait_until(lambda: client.sid not in server.part(EngineServer).sessions, timeout=3,
                     message="the session to time out")
    assert time.monotonic() - unanswered >= 0.3
    reply = await client.get_reply()
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)
    assert nsp_sid not in server.core.connections


# --------------------------------------------------------------------------- upgrade


async def test_upgrade_probe_answers_the_pending_poll_with_noop(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(SLOW_PINGS, redis=False)
    client, _ = await connected_polling(http, server)
    await client.post('42["subscribe",{"channel":"up"}]')
    await subscribed(server, "up")
    session = server.part(EngineServer).sessions[client.sid]

    pending = asyncio.create_task(client.get_reply())
    await wait_until(lambda: session.poll is not None, message="the GET to be held")
    ws = await open_ws(http, server_url(server), eio=4, sid=client.sid)
    await ws.send_str("2probe")
    assert await ws_recv(ws) == "3probe"
    noop = await asyncio.wait_for(pending, 3)
    assert (noop.status, noop.body) == (200, b"6")
    await ws.send_str("5")

    server.publish(BroadcastEvent("up", "after", "1"))
    assert await ws_recv(ws) == '42["after","up",1]'
    reply = await client.get_reply()
    assert reply.status == 400
    await ws.close()


# --------------------------------------------------------------------------- namespaces, toOthers


async def test_other_namespace_is_refused(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    ws = await open_ws(http, server_url(server), eio=4)
    assert (await ws_recv(ws)).startswith("0{")
    await ws.send_str("40/other,")
    assert await ws_recv(ws, pong=True) == '44/other,{"message":"Invalid namespace"}'
    await ws.send_str("40")
    connect_sid(await ws_recv(ws, pong=True))
    await ws.close()


async def test_to_others_uses_the_namespace_sid(
    make_server: ServerFactory, http: Http, redis: aioredis.Redis
) -> None:
    server = await make_server(SLOW_PINGS)
    a, a_sid = await connected_ws(http, server, "team")
    b, _ = await connected_ws(http, server, "team")

    await redis.publish("team", laravel_message("typed", {"n": 1}, socket_id=a_sid))
    await redis.publish("team", laravel_message("everyone", {"n": 2}))
    assert json.loads((await ws_recv(b, pong=True))[2:]) == [
        "typed", "team", {"n": 1, "socket": a_sid}]
    assert json.loads((await ws_recv(b, pong=True))[2:]) == [
        "everyone", "team", {"n": 2, "socket": None}]
    # A skipped the first and got the second.
    assert json.loads((await ws_recv(a, pong=True))[2:])[0] == "everyone"
    await a.close()
    await b.close()


async def test_permessage_deflate_is_declined(make_server: ServerFactory) -> None:
    server = await make_server(redis=False)
    ws = await RawWebSocket.connect(
        server, query="EIO=4&transport=websocket",
        headers={"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"})
    assert ws.status == 101
    assert "sec-websocket-extensions" not in ws.headers
    assert (await ws.recv_text()).startswith("0{")
    await ws.close()


async def test_client_close_ends_the_pending_poll_with_noop(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(SLOW_PINGS, redis=False)
    client, nsp_sid = await connected_polling(http, server)
    session = server.part(EngineServer).sessions[client.sid]
    pending = asyncio.create_task(client.get_reply())
    await wait_until(lambda: session.poll is not None, message="the GET to be held")
    await client.post("1")
    noop = await asyncio.wait_for(pending, 3)
    assert (noop.status, noop.body) == (200, b"6")
    reply = await client.get_reply()
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)
    assert nsp_sid not in server.core.connections
