"""Each app's own limits and rate limits, refused with the protocol's own error (Soketi's
codes for Pusher): 4004 over the connection quota, 4301 over the client event rate,
``pusher:subscription_error`` for channel and presence bounds, HTTP 413/400/429 from the
Pusher HTTP API. Two instances share the connection quota and the presence bound; another app
is never refused for one app's traffic."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pusher
import pytest

from echo_server.apps.tags import tag_of
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, requires_node, server_url
from tests.support.auth_backend import AuthBackend
from tests.support.raw import RawWebSocket, next_pusher_message, pusher_client
from tests.support.waits import ClientFactory, wait_until

LIMITED = {"appId": "4001", "key": "tight-key", "secret": "tight-secret",
           "maxConnections": 3, "maxConnectionsPerAddress": 3, "maxChannelsPerConnection": 2,
           "maxPresenceMembersPerChannel": 1, "maxPresenceMemberSizeInKb": 1,
           "maxClientEventsPerSecond": 1, "maxEventPayloadInKb": 1, "maxEventBatchSize": 2,
           "maxEventChannelsAtOnce": 2, "maxBackendEventsPerSecond": 2,
           "maxReadRequestsPerSecond": 1}
FREE = {"appId": "4002", "key": "free-key", "secret": "free-secret"}
# Its own channel rules let its signed-in users into presence rooms: no signature, no
# /broadcasting/auth at the subscribe.
RULED = {"appId": "4003", "key": "ruled-key", "secret": "ruled-secret",
         "maxPresenceMembersPerChannel": 2, "maxPresenceMemberSizeInKb": 1,
         "channels": {"presence-{room}": {"user_info": ["name"]}}}


async def _servers(make_server: ServerFactory, count: int = 1) -> list[EchoServer]:
    options = {"apps": [LIMITED, FREE, RULED], "database": "redis",
               "cluster": {"heartbeatInterval": 100, "livenessTtl": 400}}
    return [await make_server(options) for _ in range(count)]


def _laravel(server: EchoServer, app: dict[str, Any]) -> pusher.Pusher:
    return pusher.Pusher(app_id=app["appId"], key=app["key"], secret=app["secret"],
                         host="127.0.0.1", port=server.port, ssl=False)


def _subscribe(ws: RawWebSocket, socket_id: str, channel: str, app: dict[str, Any],
               member: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {"channel": channel}
    text = f"{socket_id}:{channel}"
    if member is not None:
        data["channel_data"] = json.dumps(member)
        text += ":" + data["channel_data"]
    if channel.startswith(("private-", "presence-")):
        signature = hmac.new(app["secret"].encode(), text.encode(), hashlib.sha256).hexdigest()
        data["auth"] = f"{app['key']}:{signature}"
    ws.send_text(json.dumps({"event": "pusher:subscribe", "data": data}))


async def _answer(ws: RawWebSocket) -> tuple[str, Any]:
    got = await next_pusher_message(ws)
    data = got.get("data")
    return got["event"], json.loads(data) if isinstance(data, str) else data


async def _signed_in(server: EchoServer, app: dict[str, Any], user: dict[str, Any]
                     ) -> RawWebSocket:
    """A Pusher connection signed in (``pusher:signin``) as ``user`` of ``app``."""
    ws, socket_id = await pusher_client(server, app["key"])
    user_data = json.dumps(user)
    signature = hmac.new(app["secret"].encode(), f"{socket_id}::user::{user_data}".encode(),
                         hashlib.sha256).hexdigest()
    ws.send_text(json.dumps({"event": "pusher:signin", "data": {
        "user_data": user_data, "auth": f"{app['key']}:{signature}"}}))
    assert (await _answer(ws))[0] == "pusher:signin_success"
    return ws


async def _refused(server: EchoServer, key: str) -> int:
    """The code a Pusher connection is refused with: its pusher:error, then its close."""
    ws = await RawWebSocket.connect(server, "protocol=7", path=f"/app/{key}")
    message = json.loads(await ws.recv_text())
    assert message["event"] == "pusher:error", message
    assert await ws.wait_closed() == message["data"]["code"]
    return int(message["data"]["code"])


async def test_channel_presence_and_client_event_bounds_across_two_instances(
        make_server: ServerFactory) -> None:
    first, second = await _servers(make_server, 2)
    ws, socket_id = await pusher_client(first, LIMITED["key"])
    _subscribe(ws, socket_id, "presence-room", LIMITED, {"user_id": 1})
    assert (await _answer(ws))[0] == "pusher_internal:subscription_succeeded"
    # maxPresenceMembersPerChannel: the second user, on the other instance, is refused.
    other, other_id = await pusher_client(second, LIMITED["key"])
    _subscribe(other, other_id, "presence-room", LIMITED, {"user_id": 2})
    event, data = await _answer(other)
    assert (event, data["status"]) == ("pusher:subscription_error", 4100)
    # maxPresenceMemberSizeInKb: a member over 1 KB.
    _subscribe(other, other_id, "presence-big", LIMITED, {"user_id": 2, "user_info": "x" * 2000})
    event, data = await _answer(other)
    assert (event, data["status"]) == ("pusher:subscription_error", 4301)
    # maxChannelsPerConnection: 2 held, the third refused.
    _subscribe(ws, socket_id, "orders", LIMITED)
    assert (await _answer(ws))[0] == "pusher_internal:subscription_succeeded"
    _subscribe(ws, socket_id, "invoices", LIMITED)
    event, data = await _answer(ws)
    assert (event, data["status"]) == ("pusher:subscription_error", 4300)
    # maxClientEventsPerSecond: the second whisper in the second is refused with 4301.
    for number in (1, 2):
        ws.send_text(json.dumps({"event": "client-typing", "channel": "presence-room",
                                 "data": {"n": number}}))
    event, data = await _answer(ws)
    assert (event, data["code"]) == ("pusher:error", 4301)
    # The other app, same names, no bound of its own: all of it admitted.
    free, free_id = await pusher_client(second, FREE["key"])
    for channel, user in (("presence-room", 7), ("orders", None), ("invoices", None)):
        _subscribe(free, free_id, channel, FREE, {"user_id": user} if user else None)
        assert (await _answer(free))[0] == "pusher_internal:subscription_succeeded"


@requires_node
async def test_the_connection_quota_is_4004_to_pusher_js(
        make_server: ServerFactory, node_client: ClientFactory) -> None:
    [server] = await _servers(make_server)
    held = [await pusher_client(server, LIMITED["key"]) for _ in range(3)]
    page = await node_client("echo2-reverb", server_url(server),
                             extra_args=["--key", LIMITED["key"]])
    await page.expect("connect_error")
    assert await _refused(server, LIMITED["key"]) == 4004
    free = await node_client("echo2-reverb", server_url(server), extra_args=["--key", "free-key"])
    await free.expect("connected")
    del held


async def test_the_connection_quota_holds_across_instances(make_server: ServerFactory) -> None:
    """maxConnections 3 over two instances on one Redis: two connections on the first, then
    the second admits one and refuses the next with 4004; once the first closes one (and a
    heartbeat told the second), the second admits again, and the first is full in turn."""
    first, second = await _servers(make_server, 2)
    assert first.cluster is not None and second.cluster is not None
    key, seats = LIMITED["key"], tag_of(LIMITED["appId"])  # its seats count under its id
    on_first = [await pusher_client(first, key) for _ in range(2)]
    await wait_until(lambda: second.cluster.elsewhere(seats) == 2, "the second heard of 2")
    on_second = [await pusher_client(second, key)]
    assert await _refused(second, key) == 4004
    await on_first.pop()[0].close()
    await wait_until(lambda: second.cluster.elsewhere(seats) == 1, "the second heard of 1")
    on_second.append(await pusher_client(second, key))
    await wait_until(lambda: first.cluster.elsewhere(seats) == 2, "the first heard of 2")
    assert await _refused(first, key) == 4004
    for ws, _ in on_first + on_second:
        await ws.close()


async def test_the_http_api_refuses_over_the_apps_bounds(make_server: ServerFactory) -> None:
    [server] = await _servers(make_server)
    laravel = _laravel(server, LIMITED)

    async def refused(call: Any, *args: Any) -> pusher.errors.PusherError:
        with pytest.raises(pusher.errors.PusherError) as caught:
            await asyncio.to_thread(call, *args)
        return caught.value

    too_large = await refused(laravel.trigger, "orders", "big", {"x": "y" * 2000})
    assert "413" in str(too_large)
    assert isinstance(await refused(laravel.trigger, ["a", "b", "c"], "e", {}),
                      pusher.errors.PusherBadRequest)
    batch = [{"channel": "orders", "name": "e", "data": "{}"}] * 3
    assert isinstance(await refused(laravel.trigger_batch, batch),
                      pusher.errors.PusherBadRequest)
    # maxBackendEventsPerSecond 2: a burst of two events, then 429.
    await asyncio.to_thread(laravel.trigger, ["a", "b"], "e", {})
    assert "429" in str(await refused(laravel.trigger, "orders", "e", {}))
    # maxReadRequestsPerSecond 1.
    await asyncio.to_thread(laravel.channels_info)
    assert "429" in str(await refused(laravel.channels_info))
    # The other app is not slowed by this one's traffic.
    free = _laravel(server, FREE)
    for _ in range(3):
        await asyncio.to_thread(free.trigger, ["a", "b", "c"], "e", {"x": "y" * 2000})
        await asyncio.to_thread(free.channels_info)


async def test_channel_rules_keep_the_apps_presence_bounds(make_server: ServerFactory) -> None:
    """An app whose own rules admit its signed-in users to presence rooms keeps its bounds:
    maxPresenceMembersPerChannel 2 refuses the third user (4100) but not a second tab of a
    member, and maxPresenceMemberSizeInKb 1 refuses a member over 1 KB (4301)."""
    [server] = await _servers(make_server)
    users = [await _signed_in(server, RULED, {"id": n, "name": f"user {n}"}) for n in (1, 2, 3)]
    users.append(await _signed_in(server, RULED, {"id": 1, "name": "user 1"}))  # another tab
    users.append(await _signed_in(server, RULED, {"id": 4, "name": "x" * 2000}))
    subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": "presence-room"}})
    answers = []
    for ws in users:
        ws.send_text(subscribe)
        event, data = await _answer(ws)
        answers.append(data["status"] if event == "pusher:subscription_error" else event)
    joined = "pusher_internal:subscription_succeeded"
    assert answers == [joined, joined, 4100, joined, 4301]
    members = await server.core.presence.store.members("presence-room\x1f4003")
    assert sorted(m.user_id for m in members) == ["1", "2"]  # the signed-in ids


@requires_node
async def test_an_isolated_apps_socket_io_pages_keep_its_presence_bounds(
        make_server: ServerFactory, node_client: ClientFactory,
        auth_backend: AuthBackend) -> None:
    """laravel-echo on socket.io at an isolated app's host name, its members from its own
    /broadcasting/auth: its maxPresenceMembersPerChannel holds there as for its Pusher
    clients (Echo's error callback gets 4100)."""
    auth_backend.rules["presence-room"] = lambda call: {"channel_data": {"user_id": next(
        int(v) for k, v in call.headers.items() if k.lower() == "x-user-id"), "user_info": {}}}
    server = await make_server({"apps": [{
        "appId": "4004", "key": "tenant-key", "secret": "tenant-secret",
        "hosts": ["tenant.test"], "authHost": auth_backend.url,
        "maxPresenceMembersPerChannel": 1}]}, redis=False)
    pages = []
    for user in (1, 2):
        page = await node_client("echo2-sio4", server_url(server), transports="websocket",
                                 auth_headers={"X-User-Id": str(user)},
                                 extra_headers={"Host": f"tenant.test:{server.port}"})
        await page.expect("connected")
        await page.command({"cmd": "join", "channel": "room"})
        pages.append(page)
        if user == 1:
            await page.expect("presence_here")
    refused = await pages[1].expect("subscription_error")
    assert (refused["channel"], refused["status"]) == ("presence-room", 4100)


async def test_simultaneous_joins_of_the_last_presence_slot_admit_one(
        make_server: ServerFactory) -> None:
    """maxPresenceMembersPerChannel 1, three users asking for the room at once on one
    instance (each check awaits Redis before its join is written): one gets in, the others
    are refused with 4100, and the room holds one member."""
    [server] = await _servers(make_server)
    clients = [await pusher_client(server, LIMITED["key"]) for _ in range(3)]
    for user, (ws, socket_id) in enumerate(clients, 1):
        _subscribe(ws, socket_id, "presence-race", LIMITED, {"user_id": user})
    answers = [await _answer(ws) for ws, _ in clients]
    assert sorted(event for event, _ in answers) == [
        "pusher:subscription_error", "pusher:subscription_error",
        "pusher_internal:subscription_succeeded"]
    assert all(data["status"] == 4100 for event, data in answers if event.endswith("error"))
    await server.core.presence.drain()
    members = await server.core.presence.store.members("presence-race\x1f4001")
    assert len(members) == 1
