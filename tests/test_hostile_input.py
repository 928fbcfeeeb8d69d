"""Hostile input at the Engine.IO, Socket.IO and channel edges (issue "Safe to expose",
items 5-7 and the list of tracebacks): raw clients send it, and each time the sender gets
the protocol's error, nothing is logged with a traceback, and everyone else is unaffected."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from broadcaster.event import BroadcastEvent
from channel_auth import AuthRequest, AuthResult
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, server_url
from tests.support.raw import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_TEXT,
    Polling,
    RawWebSocket,
    http_request,
    wait_until,
)

FAST_CLUSTER = {"heartbeatInterval": 50, "livenessTtl": 200}
UNKNOWN_SID = {"code": 1, "message": "Session ID unknown"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Bad input is a rate-limited warning, never a logged exception."""
    caplog.set_level(logging.WARNING)
    yield
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


class AllowAll:
    async def authorize(self, request: AuthRequest) -> AuthResult:
        return AuthResult(200, {"user_id": request.socket_id, "user_info": {}})


async def eio4(server: EchoServer, address: str = "127.0.0.1") -> tuple[RawWebSocket, str]:
    """A raw EIO4 websocket client past its CONNECT; returns it and its socket id."""
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket",
                                    local_addr=(address, 0))
    assert (await ws.recv_text()).startswith("0")
    ws.send_text("40")
    connected = await ws.recv_text()
    assert connected.startswith("40")
    return ws, json.loads(connected[2:])["sid"]


def subscribe(ws: RawWebSocket, channel_json: str) -> None:
    ws.send_text(f'42["subscribe",{{"channel":{channel_json}}}]')


async def test_lone_surrogates_never_reach_the_cluster(make_server: ServerFactory,
                                                       http: aiohttp.ClientSession,
                                                       redis: aioredis.Redis) -> None:
    """`"\\ud800"` is valid JSON but not UTF-8: as a channel name it made the API answer 500
    and every heartbeat fail, until the other instance declared this one dead."""
    options = {"database": "redis", "cluster": FAST_CLUSTER}
    a = await make_server(options, authorizer=AllowAll())
    b = await make_server(options, authorizer=AllowAll())
    for packet in ('42["subscribe",{"channel":"\\ud800"}]',
                   '42["subscribe",{"channel":"presence-\\ud800"}]',
                   '42["client event",{"event":"client-x","channel":"private-chat",'
                   '"data":"\\udc00"}]'):
        attacker, _ = await eio4(a)
        attacker.send_text(packet)
        assert await attacker.wait_closed() in (None, 1000)  # socket.io's parse error
    attacker, _ = await eio4(a)
    subscribe(attacker, '"private-chat"')
    await wait_until(lambda: a.core.rooms.count("private-chat") == 1)
    assert set(a.core.rooms) == {"private-chat"}
    assert a.errors.counts["bad_frame"] == 3
    base = server_url(a)
    for path in ("/apps/test-app/channels", "/status.json"):
        reply = await http_request(http, "GET", base + path + "?auth_key=test-key")
        assert reply.status == 200
    # Heartbeats keep landing (each 50 ms, liveness 200 ms), and b still counts a's client.
    assert a.cluster is not None
    stats_key = a.cluster.stats_key(a.instance_id)
    since = time.time()
    async with asyncio.timeout(5):
        while json.loads(await redis.get(stats_key) or b'{"at":0}')["at"] < since + 0.4:
            await asyncio.sleep(0.02)
    assert await b.state.connection_count() == 1
    await attacker.close()


async def test_channel_name_and_subscription_bounds(make_server: ServerFactory) -> None:
    server = await make_server({"limits": {"maxSubscriptions": 6,
                                           "maxSubscriptionsPerAddress": 3}}, redis=False)
    first, _ = await eio4(server)
    subscribe(first, json.dumps("n" * 201))
    assert await first.next_event() == ["subscription_error", "n" * 201, 400]
    for n in range(3):
        subscribe(first, f'"c{n}"')
    subscribe(first, '"c3"')
    assert await first.next_event() == ["subscription_error", "c3", 429]
    second, _ = await eio4(server)  # same address: over its bound too
    subscribe(second, '"c0"')
    assert await second.next_event() == ["subscription_error", "c0", 429]
    other, _ = await eio4(server, "127.0.0.2")
    for n in range(3):
        subscribe(other, f'"c{n}"')
    subscribe(other, '"c9"')  # the server's bound: 6 in all
    assert await other.next_event() == ["subscription_error", "c9", 429]
    assert server.errors.counts["too_many_subscriptions"] == 3
    await first.close()  # its subscriptions are released with it
    await wait_until(lambda: server.core.subscriptions.total == 3)
    subscribe(second, '"c0"')
    await wait_until(lambda: server.core.rooms.count("c0") == 2)


async def test_a_channel_named_after_a_socket_id_takes_nothing(
        make_server: ServerFactory) -> None:
    server = await make_server(redis=False)
    victim, victim_id = await eio4(server)
    attacker, _ = await eio4(server)
    subscribe(attacker, json.dumps(victim_id))
    subscribe(attacker, '"marker"')
    await wait_until(lambda: server.core.rooms.count("marker") == 1)
    server.publish(BroadcastEvent(victim_id, "secret", '{"for":"victim"}'))
    server.publish(BroadcastEvent("marker", "marker", "1"))
    assert await victim.next_event() == ["secret", victim_id, {"for": "victim"}]
    assert await attacker.next_event() == ["marker", "marker", 1]  # and nothing before it


async def test_a_polling_session_answers_only_its_own_client(
        make_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    """An EIO3 sid is the socket id every toOthers broadcast carries: from another address
    it must neither post into the session nor read it."""
    server = await make_server({"trustedProxies": ["127.0.0.3"]}, redis=False)
    victim = Polling(http, server_url(server))
    await victim.handshake()
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as elsewhere:
        thief = Polling(elsewhere, server_url(server), sid=victim.sid)
        reply = await thief.post_raw('19:42["subscribe",{}]')
        assert (reply.status, reply.json()) == (400, UNKNOWN_SID)
        assert (await thief.get_reply()).json() == UNKNOWN_SID
    # Behind a trusted proxy the forwarded address is the client's.
    proxy = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
    async with aiohttp.ClientSession(connector=proxy) as via_proxy:
        alice = Polling(via_proxy, server_url(server), headers={"X-Forwarded-For": "10.0.0.1"})
        await alice.handshake()
        mallory = Polling(via_proxy, server_url(server), sid=alice.sid,
                          headers={"X-Forwarded-For": "10.0.0.1, 10.0.0.2"})
        assert (await mallory.get_reply()).json() == UNKNOWN_SID
        await alice.post("1")


async def test_malformed_packets_get_the_protocol_error(make_server: ServerFactory,
                                                        http: aiohttp.ClientSession) -> None:
    server = await make_server(redis=False)
    # Nested deeper than any parser should recurse.
    ws, _ = await eio4(server)
    ws.send_text("42" + "[" * 5000 + "]" * 5000)
    assert await ws.wait_closed() in (None, 1000)
    # A superscript digit as an ack id.
    ws, _ = await eio4(server)
    ws.send_text('42²["subscribe",{"channel":"x"}]')
    assert await ws.wait_closed() in (None, 1000)
    # ... and as an EIO3 polling length prefix.
    client = Polling(http, server_url(server))
    await client.handshake()
    reply = await client.post_raw("²:40")
    assert reply.status == 400
    # A non-ASCII Sec-WebSocket-Key.
    refused = await RawWebSocket.connect(server, key="ключ-ключ-ключ-ключ-ключ")
    assert refused.status == 400
    assert server.errors.counts["bad_frame"] >= 3


async def test_websocket_edge_cases(make_server: ServerFactory) -> None:
    server = await make_server(redis=False)
    # A close frame with the reserved code 1005 is answered with 1000, not echoed.
    ws, _ = await eio4(server)
    ws.send_frame(OP_CLOSE, struct.pack("!H", 1005))
    assert await ws.wait_closed() == 1000
    # Empty continuation frames are bounded in number, not only in bytes.
    ws, _ = await eio4(server)
    ws.send_frame(OP_TEXT, b"42", fin=False)
    for _ in range(2000):
        ws.send_frame(OP_CONTINUATION, b"", fin=False)
    assert await ws.wait_closed() == 1009


async def test_binary_packets_over_polling(make_server: ServerFactory,
                                           http: aiohttp.ClientSession) -> None:
    server = await make_server(redis=False)
    # EIO4: a base64 binary packet (an attachment) does not end the session.
    client = Polling(http, server_url(server), eio=4)
    await client.handshake()
    await client.post("40")
    await client.get_until(lambda p: p.startswith("40"))
    await client.post('451-["client event",{"_placeholder":true,"num":0}]', "bAQID")
    await client.post('42["subscribe",{"channel":"after-binary"}]')
    await wait_until(lambda: server.core.rooms.count("after-binary") == 1)
    # EIO3 XHR2: a binary payload carrying two string packets; both are read.
    old = Polling(http, server_url(server))
    await old.handshake()
    packets = ['42["subscribe",{"channel":"one"}]', '42["subscribe",{"channel":"two"}]']
    body = b"".join(b"\x00" + bytes(int(d) for d in str(len(p))) + b"\xff" + p.encode()
                    for p in packets)
    reply = await old.post_raw(body, headers={"Content-Type": "application/octet-stream"})
    assert reply.status == 200
    rooms = server.core.rooms
    await wait_until(lambda: rooms.count("one") == 1 and rooms.count("two") == 1)


async def test_a_refusal_reaches_an_eio3_websocket_client(make_server: ServerFactory) -> None:
    """socket.io-client 2 straight on a websocket, with no token where one is required: its
    open packet waits a few milliseconds after the 101 (a write of its own), and the refusal
    came within them; the close went out at once and the held packets never did, so the
    client saw a bare close and reconnected for ever instead of getting its `error`."""
    server = await make_server({"jwt": {"secret": "s" * 48, "algorithms": ["HS256"]}},
                               redis=False)
    ws = await RawWebSocket.connect(server)
    assert (await ws.recv_text())[0] == "0"  # the open packet
    assert await ws.recv_text() == '44"authentication required"'
    assert await ws.wait_closed() is not None


async def test_a_refusal_reaches_an_eio3_polling_client(make_server: ServerFactory,
                                                        http: aiohttp.ClientSession) -> None:
    """The JWT refusal came after the handshake answer and was dropped with the session:
    socket.io-client 2.5 saw only `xhr poll error`, and looped."""
    server = await make_server({"jwt": {"secret": "s" * 48, "algorithms": ["HS256"]}},
                               redis=False)
    client = Polling(http, server_url(server))
    _, opening = await client.handshake()
    assert opening[1:] == []  # the token is checked after the handshake's answer
    assert await client.get() == ['44"authentication required"', "1"]
