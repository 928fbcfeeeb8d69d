"""Connection-state recovery with the real npm stack (laravel-echo 2 + socket.io-client 4):
each client reaches the server through a TCP proxy that cuts its connection without a close,
the way a network drop does, while events are published on a public, a private and a
presence channel.

What the user sees: the page reconnects as the same socket (``socket.recovered``, the same
``Echo.socketId()``), gets the missed events in order, none twice; the app's auth endpoint
is not asked again; the other members of the presence channel hear nothing when the drop is
shorter than the presence grace, one leaving and one joining when it is longer; past the
recovery window the client starts over as a new socket.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis

from broadcaster.event import BroadcastEvent
from echo_server.process.server import EchoServer
from tests.conftest import ProxyFactory, ServerFactory, laravel_message, requires_node, server_url
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.node_client import NodeEchoClient
from tests.support.raw import OP_CLOSE, RawWebSocket, eio3_recovering_client, socketio_client
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import ClientFactory, dropped, wait_until

pytestmark = requires_node

PUBLIC, PRIVATE, PRESENCE = "leads-management", "private-admin-dashboard.1", \
    "presence-leads-management"
EVENT = "lead.assigned"


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


def _as_member(call: AuthCall) -> dict[str, Any]:
    user_id = json.loads({k.lower(): v for k, v in call.headers.items()}["x-user-id"])
    return {"channel_data": {"user_id": user_id, "user_info": {"name": f"admin {user_id}"}}}


async def _server(make_server: ServerFactory, auth_backend: AuthBackend, prefix: str, *,
                  window_ms: int = 10_000, grace_ms: int = 5000) -> EchoServer:
    auth_backend.allow_private(PRIVATE)
    auth_backend.rules[PRESENCE] = _as_member
    return await make_server({
        "authHost": auth_backend.url, "database": "redis",
        "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": window_ms},
                     "presenceGraceMs": grace_ms}})


async def _admin(node_client: ClientFactory, url: str, user_id: int,
                 transports: str = "websocket") -> tuple[NodeEchoClient, str]:
    """An admin page: the seed's three channels, as Echo 2 subscribes them."""
    client = await node_client("echo2-sio4", url, transports=transports,
                               auth_headers={"X-User-Id": json.dumps(user_id)})
    connected = await client.expect("connected")
    await client.command({"cmd": "channel", "channel": PUBLIC, "listen": [f".{EVENT}"]})
    await client.command({"cmd": "private", "channel": "admin-dashboard.1",
                          "listen": [f".{EVENT}"]})
    await client.command({"cmd": "join", "channel": "leads-management",
                          "listen": [f".{EVENT}"]})
    await client.expect("presence_here")
    return client, connected["socketId"]


async def _publish(redis: aioredis.Redis, prefix: str, channel: str, n: int) -> None:
    await redis.publish(prefix + channel, laravel_message(EVENT, {"lead": {"id": n}}))


async def _cut(server: EchoServer, proxy: TcpProxy, socket_id: str) -> None:
    """Drop every connection through the proxy; return once the server has parked the
    page's socket (the drop noticed, as a transport close)."""
    proxy.cut()
    sessions = server.core.sessions
    assert sessions is not None
    await wait_until(lambda: any(p.id == socket_id
                                 for p in sessions.parked.values()), "the drop noticed")


async def _missed(redis: aioredis.Redis, prefix: str, first: int) -> list[tuple[str, int]]:
    sent = [(PUBLIC, first), (PRIVATE, first + 1), (PRESENCE, first + 2)]
    for channel, n in sent:
        await _publish(redis, prefix, channel, n)
    return sent


async def _received(client: NodeEchoClient, count: int) -> list[tuple[str, int]]:
    got = [await client.expect("event") for _ in range(count)]
    return [(m["channel"], m["data"]["lead"]["id"]) for m in got]


@pytest.mark.parametrize("transports", ["websocket", "polling"])
async def test_a_dropped_page_comes_back_with_what_it_missed(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str, proxy_to: ProxyFactory,
        transports: str) -> None:
    server = await _server(make_server, auth_backend, prefix)
    proxy = await proxy_to(server)
    other, _ = await _admin(node_client, server_url(server), 2)
    page, socket_id = await _admin(node_client, proxy.url, 1, transports)
    await other.expect("presence_joining")
    await _publish(redis, prefix, PUBLIC, 0)
    assert await _received(page, 1) == [(PUBLIC, 0)]
    calls = len(auth_backend.calls)

    await _cut(server, proxy, socket_id)
    sent = await _missed(redis, prefix, 1)
    proxy.release()
    back = await page.expect("connected", timeout=10)
    assert back["recovered"] is True
    assert back["socketId"] == socket_id
    assert await page.socket_id() == socket_id  # Echo.socketId(): X-Socket-ID stays right
    assert await _received(page, 3) == sent
    # Still in every channel, with nothing more to come and nothing twice.
    await _publish(redis, prefix, PRESENCE, 9)
    assert await _received(page, 1) == [(PRESENCE, 9)]
    assert not page.backlog("event")
    assert len(auth_backend.calls) == calls  # no second /broadcasting/auth
    await other.expect_none("presence_leaving", within=0.3)
    assert not other.backlog("presence_joining")
    assert server.metrics is not None
    assert b'echo_recoveries_total{result="recovered"} 1.0' in server.metrics.render()


async def test_a_page_that_never_got_an_event_and_drops_twice_recovers_both_times(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str, proxy_to: ProxyFactory) -> None:
    """socket.io's own recovery fails both (its issues #4888 and #4880)."""
    server = await _server(make_server, auth_backend, prefix)
    proxy = await proxy_to(server)
    page, socket_id = await _admin(node_client, proxy.url, 1)
    for first in (1, 4):
        await _cut(server, proxy, socket_id)
        sent = await _missed(redis, prefix, first)
        proxy.release()
        back = await page.expect("connected", timeout=10)
        assert (back["recovered"], back["socketId"]) == (True, socket_id)
        assert await _received(page, 3) == sent


async def test_beyond_the_presence_grace_leaving_and_joining_are_announced_once(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str, proxy_to: ProxyFactory) -> None:
    server = await _server(make_server, auth_backend, prefix, grace_ms=200)
    proxy = await proxy_to(server)
    other, _ = await _admin(node_client, server_url(server), 2)
    page, socket_id = await _admin(node_client, proxy.url, 1)
    await other.expect("presence_joining")
    await _cut(server, proxy, socket_id)
    left = await other.expect("presence_leaving", timeout=5)
    assert left["user"] == {"name": "admin 1"}
    sent = await _missed(redis, prefix, 1)
    proxy.release()
    back = await page.expect("connected", timeout=10)
    assert (back["recovered"], back["socketId"]) == (True, socket_id)
    assert await _received(page, 3) == sent
    joined = await other.expect("presence_joining", timeout=5)
    assert joined["user"] == {"name": "admin 1"}
    await other.expect_none("presence_leaving", within=0.3)
    assert len(other.backlog("presence_joining")) == 0
    members = await server.core.presence.store.members(PRESENCE)
    assert sorted(m.user_id for m in members) == [1, 2]


async def test_beyond_the_window_the_page_starts_over(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str, proxy_to: ProxyFactory) -> None:
    server = await _server(make_server, auth_backend, prefix, window_ms=400, grace_ms=100)
    proxy = await proxy_to(server)
    other, _ = await _admin(node_client, server_url(server), 2)
    page, socket_id = await _admin(node_client, proxy.url, 1)
    await other.expect("presence_joining")
    await _cut(server, proxy, socket_id)
    await other.expect("presence_leaving", timeout=5)
    sessions = server.core.sessions
    assert sessions is not None
    await wait_until(lambda: not sessions.parked, "the session expired")
    await _missed(redis, prefix, 1)
    proxy.release()
    back = await page.expect("connected", timeout=10)
    assert back["recovered"] is False
    assert back["socketId"] != socket_id
    await page.expect_none("event", within=0.3)
    await other.expect_none("presence_leaving", within=0.1)  # the member left once
    assert server.metrics is not None
    assert b'echo_recoveries_total{result="unknown_session"} 1.0' in server.metrics.render()


async def test_a_gap_the_history_no_longer_holds_is_not_recovered_in_part(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str, proxy_to: ProxyFactory) -> None:
    """Two packets kept per channel, three missed on one: the page gets a new socket and
    none of the three (handing over two would look like a complete recovery)."""
    auth_backend.allow_private(PRIVATE)
    auth_backend.rules[PRESENCE] = _as_member
    server = await make_server({
        "authHost": auth_backend.url, "database": "redis",
        "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "socketio": {"connectionStateRecovery": {"maxPacketsPerChannel": 2}}})
    proxy = await proxy_to(server)
    page, socket_id = await _admin(node_client, proxy.url, 1)
    await _cut(server, proxy, socket_id)
    for n in range(3):
        await _publish(redis, prefix, PUBLIC, n)
    proxy.release()
    back = await page.expect("connected", timeout=10)
    assert (back["recovered"], back["socketId"] != socket_id) == (False, True)
    await page.expect_none("event", within=0.3)
    assert server.metrics is not None
    assert b'echo_recoveries_total{result="history_evicted"} 1.0' in server.metrics.render()
    # Its presence membership ended with the session: one admin, on the new socket.
    await page.expect("presence_here", timeout=5)
    members = await server.core.presence.store.members(PRESENCE)
    assert [m.user_id for m in members] == [1]


# --------------------------------------------------------------------------- the wire
async def test_the_wire_offsets_pid_and_a_bad_offset(make_server: ServerFactory) -> None:
    """socket.io's recovery protocol as the bytes say it: ``40{sid, pid}``; a broadcast's
    last argument is its offset (a string); Engine.IO 3 sockets never see one; a made-up
    offset gets a new session, not a partial one."""
    server = await make_server({"socketio": {"connectionStateRecovery": {}}}, redis=False)
    ws, hello = await socketio_client(server)
    assert set(hello) == {"sid", "pid"}
    ws.send_text('42["subscribe",{"channel":"leads-management"}]')
    old = await RawWebSocket.connect(server, "EIO=3&transport=websocket")
    old.send_text('42["subscribe",{"channel":"leads-management"}]')
    await wait_until(lambda: server.core.rooms.count("leads-management") == 2, "subscribed")
    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"lead":{"id":1}}'))
    first = await ws.next_event()
    assert first[:3] == ["lead.assigned", "leads-management", {"lead": {"id": 1}}]
    assert len(first) == 4 and isinstance(first[3], str) and first[3].isdigit()
    assert await old.next_event() == ["lead.assigned", "leads-management", {"lead": {"id": 1}}]

    await dropped(server, ws)
    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"lead":{"id":2}}'))
    refused, fresh = await socketio_client(
        server, "40" + json.dumps({"pid": hello["pid"], "offset": "12x"}))
    assert fresh["sid"] != hello["sid"] and fresh["pid"] != hello["pid"]
    assert server.metrics is not None
    assert b'echo_recoveries_total{result="bad_offset"} 1.0' in server.metrics.render()
    await refused.close()


async def test_the_wire_replays_in_order_with_offsets(make_server: ServerFactory) -> None:
    server = await make_server({"socketio": {"connectionStateRecovery": {}}}, redis=False)
    ws, hello = await socketio_client(server)
    ws.send_text('42["subscribe",{"channel":"a"}]')
    ws.send_text('42["subscribe",{"channel":"b"}]')
    await wait_until(lambda: server.core.rooms.count("b") == 1, "subscribed")
    server.publish(BroadcastEvent("a", "e", '{"n":0}'))
    offset = (await ws.next_event())[3]
    await dropped(server, ws)
    for n, channel in enumerate("abab", 1):
        server.publish(BroadcastEvent(channel, "e", f'{{"n":{n}}}'))
    history = server.core.history
    assert history is not None
    await wait_until(lambda: history.seq >= 5, "recorded")
    back, again = await socketio_client(
        server, "40" + json.dumps({"pid": hello["pid"], "offset": offset, "token": "x"}))
    assert again == hello  # the same socket and private id
    replayed = [await back.next_event() for _ in range(4)]
    assert [(p[1], p[2]["n"]) for p in replayed] == [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    offsets = [int(p[3]) for p in replayed]
    assert offsets == sorted(offsets) and int(offset) < offsets[0]
    server.publish(BroadcastEvent("b", "e", '{"n":5}'))
    assert (await back.next_event())[1:3] == ["b", {"n": 5}]  # still subscribed
    await back.close()


async def test_socket_io_client_2_recovers_through_our_extension(
        make_server: ServerFactory) -> None:
    """Engine.IO 3 has no CONNECT data: our kit opts in and comes back through the handshake's
    query. The socket id is the new engine session's (it is what the client reports as
    X-Socket-ID); its channels and missed events come back."""
    server = await make_server({"socketio": {"connectionStateRecovery": {}}}, redis=False)
    ws, sid, hello = await eio3_recovering_client(server, "echoRecovery=1")
    assert hello["recovered"] is False and hello["pid"]
    ws.send_text('42["subscribe",{"channel":"leads-management"}]')
    await wait_until(lambda: server.core.rooms.count("leads-management") == 1, "subscribed")
    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"n":0}'))
    offset = (await ws.next_event())[3]
    await dropped(server, ws)
    for n in (1, 2):
        server.publish(BroadcastEvent("leads-management", "lead.assigned", f'{{"n":{n}}}'))

    back, new_sid, again = await eio3_recovering_client(
        server, f"echoRecovery={hello['pid']}&echoOffset={offset}")
    assert again == {"pid": hello["pid"], "recovered": True} and new_sid != sid
    assert [(await back.next_event())[2]["n"] for _ in range(2)] == [1, 2]
    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"n":3}'))
    assert (await back.next_event())[2]["n"] == 3  # still subscribed, under the new id
    assert server.core.connections[new_sid] is not None
    await back.close()


async def test_a_socket_io_client_2_member_comes_back_under_its_new_id_unannounced(
        make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    auth_backend.rules[PRESENCE] = _as_member
    # Raw EIO3 clients do not ping: the default heartbeat, so nobody times out meanwhile.
    server = await make_server({"authHost": auth_backend.url, "socketio": {
        "connectionStateRecovery": {}, "pingInterval": 25000, "pingTimeout": 20000}},
        redis=False)
    join = ('42["subscribe",{"channel":"presence-leads-management","auth":{"headers":'
            '{"X-User-Id":"%d"}}}]')
    observer = await RawWebSocket.connect(server, "EIO=3&transport=websocket")
    observer.send_text(join % 2)
    assert (await observer.next_event())[0] == "presence:subscribed"
    ws, _sid, hello = await eio3_recovering_client(server, "echoRecovery=1")
    ws.send_text(join % 1)
    assert (await ws.next_event())[0] == "presence:subscribed"
    assert (await observer.next_event())[0] == "presence:joining"
    await dropped(server, ws)
    back, _new_sid, again = await eio3_recovering_client(server, f"echoRecovery={hello['pid']}")
    assert again["recovered"] is True
    await server.core.drain()
    members = await server.core.presence.store.members(PRESENCE)
    assert sorted(m.user_id for m in members) == [1, 2]
    # Nobody heard the member leave or join again: the next thing the observer gets is this.
    server.publish(BroadcastEvent(PRESENCE, "lead.assigned", '{"n":1}'))
    assert (await observer.next_event())[:1] == ["lead.assigned"]
    # Its membership moved to the new id: when this socket says goodbye (a close frame,
    # 1000, ends membership at once), the user goes with it.
    back.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    left = await observer.next_event()
    assert left[0] == "presence:leaving" and left[2]["user_id"] == 1
    await server.core.drain()
    assert [m.user_id for m in await server.core.presence.store.members(PRESENCE)] == [2]
