"""Three apps on one cluster of two instances: the default Socket.IO app (`clients`) and two
Pusher apps of the file's `apps`, each with a `presence-room` of its own. Real clients:
pusher-js through Laravel Echo, laravel-echo on socket.io, the Python `pusher` package
publishing; presence, events, whispers, the HTTP APIs, Redis keys and webhooks stay within
their app, and the default app keeps its keys and names exactly."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from typing import Any

import pusher
import pytest
import redis.asyncio as aioredis

from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, laravel_message, requires_node, server_url
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.http import http_client
from tests.support.node_client import NodeEchoClient
from tests.support.raw import RawWebSocket, next_pusher_message, pusher_client
from tests.support.waits import ClientFactory
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = requires_node

APPS = {"a-key": ("3001", "a-secret"), "b-key": ("3002", "b-secret")}
ROOM = "presence-room"


def _member_or_signature(call: AuthCall) -> dict[str, Any]:
    """Laravel answering /broadcasting/auth for whichever app the page belongs to: a
    socket.io client gets its member, a pusher-js page the signature of its own app."""
    headers = {k.lower(): v for k, v in call.headers.items()}
    user_id = json.loads(headers["x-user-id"])
    member = {"user_id": user_id, "user_info": {"name": f"user {user_id}"}}
    key = headers.get("x-app-key")
    if key is None:
        return {"channel_data": member}
    data = json.dumps(member)
    text = f"{call.form['socket_id']}:{call.form['channel_name']}:{data}"
    signature = hmac.new(APPS[key][1].encode(), text.encode(), hashlib.sha256).hexdigest()
    return {"auth": f"{key}:{signature}", "channel_data": data}


async def _cluster(make_server: ServerFactory, auth: AuthBackend, prefix: str,
                   **extra: Any) -> list[EchoServer]:
    options = {
        "authHost": auth.url, "database": "redis",
        "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "cluster": {"heartbeatInterval": 100, "livenessTtl": 400},
        "apps": [{"appId": app_id, "key": key, "secret": secret}
                 for key, (app_id, secret) in APPS.items()], **extra}
    return [await make_server(options) for _ in range(2)]


async def _page(node_client: ClientFactory, server: EchoServer, auth: AuthBackend, key: str,
                user: int) -> NodeEchoClient:
    page = await node_client("echo2-reverb", server_url(server),
                             auth_headers={"X-User-Id": str(user), "X-App-Key": key},
                             extra_args=["--key", key, "--auth-endpoint",
                                         f"{auth.url}/broadcasting/auth"])
    await page.expect("connected")
    await page.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"],
                        "whisper_listen": ["typing"]})
    return page


def _names(here: dict[str, Any]) -> list[str]:
    return sorted(user["name"] for user in here["users"])


async def test_the_same_presence_room_in_three_apps_is_three_rooms(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        redis: aioredis.Redis) -> None:
    prefix = f"app{secrets.token_hex(3)}_database_"
    auth_backend.rules[ROOM] = _member_or_signature
    first, second = await _cluster(make_server, auth_backend, prefix)

    a1 = await _page(node_client, first, auth_backend, "a-key", 1)
    assert _names(await a1.expect("presence_here")) == ["user 1"]
    b2 = await _page(node_client, second, auth_backend, "b-key", 2)
    assert _names(await b2.expect("presence_here")) == ["user 2"]
    sio = await node_client("echo2-sio4", server_url(second), transports="websocket",
                            auth_headers={"X-User-Id": "3"})
    await sio.expect("connected")
    await sio.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"],
                       "whisper_listen": ["typing"]})
    assert _names(await sio.expect("presence_here")) == ["user 3"]
    # App A's second member, on the other instance: A hears it; B and the default app not.
    a4 = await _page(node_client, second, auth_backend, "a-key", 4)
    assert _names(await a4.expect("presence_here")) == ["user 1", "user 4"]
    assert (await a1.expect("presence_joining"))["user"] == {"name": "user 4"}

    # App A's Laravel publishes to its presence-room: A's members get it, nobody else.
    laravel_a = pusher.Pusher(app_id="3001", key="a-key", secret="a-secret", host="127.0.0.1",
                              port=first.port, ssl=False)
    await asyncio.to_thread(laravel_a.trigger, ROOM, "lead.assigned", {"lead": 1})
    for page in (a1, a4):
        assert (await page.expect("event", channel=ROOM))["data"] == {"lead": 1}
    # The default app's Laravel (Redis) reaches the default app only.
    await redis.publish(prefix + ROOM, laravel_message("lead.assigned", {"lead": 2}))
    assert (await sio.expect("event", channel=ROOM))["data"] == {"lead": 2, "socket": None}
    # A whisper in app B's room reaches nobody of A or the default app.
    await b2.command({"cmd": "whisper", "channel": ROOM, "event": "typing", "data": {"b": 1}})
    await asyncio.gather(b2.expect_none("event", within=0.3),
                         *(page.expect_none("whisper", within=0.3) for page in (a1, a4, sio)))
    await asyncio.gather(*(page.expect_none(kind, within=0.0) for page in (a1, a4, sio, b2)
                           for kind in ("presence_joining", "event")))

    # Each app's HTTP API sees its own room; Redis holds the default app's key as before.
    laravel_b = pusher.Pusher(app_id="3002", key="b-key", secret="b-secret", host="127.0.0.1",
                              port=second.port, ssl=False)
    users_a = await asyncio.to_thread(laravel_a.users_info, ROOM)
    users_b = await asyncio.to_thread(laravel_b.users_info, ROOM)
    assert sorted(u["id"] for u in users_a["users"]) == ["1", "4"]
    assert [u["id"] for u in users_b["users"]] == ["2"]
    channels_b = await asyncio.to_thread(laravel_b.channels_info, "presence-")
    assert list(channels_b["channels"]) == [ROOM]
    async with http_client() as http, http.get(
            f"{server_url(first)}/apps/test-app/channels/{ROOM}/users?auth_key=test-key"
    ) as response:
        assert [u["id"] for u in (await response.json())["users"]] == [3]
    tag = first.core.presence.store.tag
    keys = {key.decode() for key in await redis.keys(f"{tag}:presence:*")}
    assert keys == {f"{tag}:presence:{ROOM}", f"{tag}:presence:{ROOM}\x1f3001",
                    f"{tag}:presence:{ROOM}\x1f3002"}


async def test_a_default_app_cannot_name_an_isolated_apps_channel(
        make_server: ServerFactory, auth_backend: AuthBackend, redis: aioredis.Redis) -> None:
    """The tag's separator is no part of any name that enters: not from the reference's
    API, not from a broadcast source."""
    prefix = f"app{secrets.token_hex(3)}_database_"
    server, _ = await _cluster(make_server, auth_backend, prefix)
    ws, _socket_id = await pusher_client(server, "a-key")
    ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": "room"}}))
    assert (await next_pusher_message(ws))["event"] == "pusher_internal:subscription_succeeded"
    url = f"{server_url(server)}/apps/test-app/events?auth_key=test-key"
    async with http_client() as http, http.post(url, json={
            "channel": "room\x1f3001", "name": "x", "data": {"a": 1}}) as response:
        assert response.status == 400
    async with http_client() as http, http.post(url, json={  # the core's presence names
            "channel": "room", "name": "\x1fmember_added", "data": {"a": 1}}) as response:
        assert response.status == 400
    await redis.publish(prefix + "room\x1f3001", laravel_message("x", {"a": 1}))
    laravel_a = pusher.Pusher(app_id="3001", key="a-key", secret="a-secret", host="127.0.0.1",
                              port=server.port, ssl=False)
    await asyncio.to_thread(laravel_a.trigger, "room", "mine", {"a": 2})
    got = await next_pusher_message(ws)  # the first to arrive is its own app's
    assert (got["event"], got["channel"], json.loads(got["data"])) == ("mine", "room", {"a": 2})


@pytest.mark.parametrize("channel", ["room\x1f3001", "private-x\x1f3001"])
def test_no_client_name_holds_the_separator(channel: str) -> None:
    from echo_server.core.limits import channel_name_problem

    assert channel_name_problem(channel, 200) is not None
    assert channel_name_problem(channel, 200, pusher=True) is not None


async def test_each_app_hears_its_own_webhooks(make_server: ServerFactory) -> None:
    """The default app's endpoint (a `clients` entry's) and app A's each hear their own
    `room`, under the name their clients know, signed with their own secret: two instances,
    one client of each app on each, one channel_occupied each."""
    receivers = {name: WebhookReceiver() for name in ("default", "a")}
    for receiver in receivers.values():
        await receiver.start()
    try:
        options = {
            "clients": [{"appId": "test-app", "key": "test-key", "secret": "default-secret",
                         "webhooks": [{"url": receivers["default"].url}]}],
            "apps": [{"appId": "3001", "key": "a-key", "secret": "a-secret",
                      "webhooks": [{"url": receivers["a"].url}]}],
            "database": "redis", "databaseConfig": {"redis": {
                "keyPrefix": f"app{secrets.token_hex(3)}_database_"}},
            "cluster": {"heartbeatInterval": 100, "livenessTtl": 400},
            "webhooks": {"batchMs": 50, "retryBaseMs": 50, "retryMaxMs": 200, "pollMs": 20}}
        server, other = [await make_server(options) for _ in range(2)]
        ws_a, _ = await pusher_client(server, "a-key")
        ws_default, _ = await pusher_client(server, "test-key")
        ws_a2, _ = await pusher_client(other, "a-key")
        ws_default2, _ = await pusher_client(other, "test-key")
        for ws in (ws_a, ws_default, ws_a2, ws_default2):
            ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": "room"}}))
            assert (await next_pusher_message(ws))["event"] == \
                "pusher_internal:subscription_succeeded"
        await ws_a.close()
        await ws_a2.close()
        for name, secret, key in (("a", "a-secret", "a-key"),
                                  ("default", "default-secret", "test-key")):
            events = await receivers[name].wait_events(1)
            assert [(e["name"], e["channel"]) for e in events][:1] == [("channel_occupied",
                                                                        "room")]
            delivery = receivers[name].deliveries[0]
            assert delivery.signed_with(secret) and delivery.headers["X-Pusher-Key"] == key
        # App A's room vacated: told to A, not to the default app, whose room is still held.
        events = await receivers["a"].wait_events(2)
        assert [(e["name"], e["channel"]) for e in events] == [
            ("channel_occupied", "room"), ("channel_vacated", "room")]
        # One channel_occupied for the cluster (its room still held on both instances).
        assert [(e["name"], e["channel"]) for e in receivers["default"].events()] == [
            ("channel_occupied", "room")]
    finally:
        for receiver in receivers.values():
            await receiver.stop()


async def test_metrics_and_the_status_page_per_app(make_server: ServerFactory,
                                                   auth_backend: AuthBackend) -> None:
    """Both instances' figures per app, labelled by app id; the default app as `default`."""
    prefix = f"app{secrets.token_hex(3)}_database_"
    first, second = await _cluster(make_server, auth_backend, prefix,
                                   metrics={"token": "m-token"})
    clients = [await pusher_client(first, "a-key"), await pusher_client(first, "a-key"),
               await pusher_client(second, "b-key")]
    sio = await RawWebSocket.connect(first, "EIO=4&transport=websocket")  # the default app's
    assert (await sio.recv_text()).startswith("0")
    sio.send_text("40")
    assert (await sio.recv_text()).startswith("40")
    for ws, _ in clients:
        ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": "room"}}))
        assert (await next_pusher_message(ws))["event"] == \
            "pusher_internal:subscription_succeeded"
    async with http_client() as http:
        async with http.get(f"{server_url(first)}/metrics?token=m-token") as response:
            text = await response.text()
        for line in ('echo_app_connections{app_id="3001"} 2.0',
                     'echo_app_connections{app_id="default"} 1.0',
                     'echo_app_subscriptions{app_id="3001"} 2.0',
                     'echo_app_channels{app_id="3001"} 1.0'):
            assert line in text, line
        assert 'app_id="3002"' not in text  # its client is on the other instance
        async with http.get(f"{server_url(second)}/status.json?token=m-token") as response:
            status = await response.json()
    assert status["apps"] == [{"id": "3002", "connections": 1, "channels": 1,
                               "subscriptions": 1}]
    assert status["channels"]["top"] == [{"name": "room", "app": "3002", "subscribers": 1}]


def test_metric_labels_are_bounded() -> None:
    from echo_server.web.metrics import app_rows

    figures = {"": [1, 1, 1], "a": [2, 0, 0], "b": [3, 1, 1], "c": [4, 2, 2]}
    assert app_rows(figures, 2) == {"default": [1, 1, 1], "a": [2, 0, 0], "b": [3, 1, 1],
                                    "other": [4, 2, 2]}
    assert app_rows(figures, 0) == {"default": [1, 1, 1], "other": [9, 3, 3]}


async def test_publish_presence_tells_only_the_default_apps_changes(
        make_server: ServerFactory, auth_backend: AuthBackend, redis: aioredis.Redis) -> None:
    """`databaseConfig.publishPresence` speaks to the default app's Laravel (its Redis): an
    isolated app's presence changes are not published there."""
    pubsub = redis.pubsub()
    await pubsub.subscribe("PresenceChannelUpdated")
    try:
        prefix = f"app{secrets.token_hex(3)}_database_"
        server, _ = await _cluster(make_server, auth_backend, prefix,
                                   databaseConfig={"publishPresence": True})
        ws, socket_id = await pusher_client(server, "a-key")
        member = json.dumps({"user_id": 9})
        text = f"{socket_id}:{ROOM}:{member}"
        signature = hmac.new(b"a-secret", text.encode(), hashlib.sha256).hexdigest()
        ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {
            "channel": ROOM, "auth": f"a-key:{signature}", "channel_data": member}}))
        assert (await next_pusher_message(ws))["event"] == \
            "pusher_internal:subscription_succeeded"
        auth_backend.rules[ROOM] = _member_or_signature
        sio = await RawWebSocket.connect(server, "EIO=4&transport=websocket")
        assert (await sio.recv_text()).startswith("0")
        sio.send_text("40")
        assert (await sio.recv_text()).startswith("40")
        sio.send_text(json.dumps(["subscribe", {"channel": ROOM, "auth": {"headers": {
            "X-User-Id": "3"}}}]).join(["42", ""]))
        async with asyncio.timeout(5):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    break
        update = json.loads(message["data"])["event"]
        assert update["channel"] == f"{ROOM}:members"
        assert [m["user_id"] for m in update["members"]] == [3]
    finally:
        await pubsub.aclose()


async def test_an_isolated_app_owns_a_host_name_for_socket_io(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        redis: aioredis.Redis) -> None:
    """laravel-echo on socket.io, at app A's host name: A's presence-room, with A's pusher-js
    pages; its private channels asked of A's own /broadcasting/auth; the default app's
    socket.io pages (any other host) in their own room."""
    prefix = f"app{secrets.token_hex(3)}_database_"
    auth_backend.rules[ROOM] = _member_or_signature
    options = {
        "authHost": auth_backend.url, "database": "redis",
        "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "apps": [{"appId": "3001", "key": "a-key", "secret": "a-secret",
                  "hosts": ["tenant-a.test"], "authHost": auth_backend.url},
                 {"appId": "3002", "key": "b-key", "secret": "b-secret"}]}
    server = await make_server(options)
    pusher_page = await _page(node_client, server, auth_backend, "a-key", 1)
    assert _names(await pusher_page.expect("presence_here")) == ["user 1"]
    default = await node_client("echo2-sio4", server_url(server), transports="websocket",
                                auth_headers={"X-User-Id": "3"})
    await default.expect("connected")
    await default.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"]})
    assert _names(await default.expect("presence_here")) == ["user 3"]
    tenant = await node_client("echo2-sio4", server_url(server), transports="websocket",
                               auth_headers={"X-User-Id": "2"},
                               extra_headers={"Host": f"tenant-a.test:{server.port}"})
    await tenant.expect("connected")
    await tenant.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"]})
    assert _names(await tenant.expect("presence_here")) == ["user 1", "user 2"]
    assert (await pusher_page.expect("presence_joining"))["user"] == {"name": "user 2"}
    await default.expect_none("presence_joining", within=0.2)
    # App A's Laravel publishes: its socket.io and pusher-js pages get it; the default not.
    laravel_a = pusher.Pusher(app_id="3001", key="a-key", secret="a-secret", host="127.0.0.1",
                              port=server.port, ssl=False)
    await asyncio.to_thread(laravel_a.trigger, ROOM, "lead.assigned", {"lead": 5})
    assert (await tenant.expect("event", channel=ROOM))["data"] == {"lead": 5}
    assert (await pusher_page.expect("event", channel=ROOM))["data"] == {"lead": 5}
    await redis.publish(prefix + ROOM, laravel_message("lead.assigned", {"lead": 6}))
    assert (await default.expect("event", channel=ROOM))["data"] == {"lead": 6, "socket": None}
    await tenant.expect_none("event", within=0.3)
    calls = [call for call in auth_backend.calls if call.form.get("channel_name") == ROOM]
    assert len(calls) == 3  # each page's own subscribe, A's asked with the plain name


async def test_an_isolated_apps_status_counts_its_own_connections(
        make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    """`/apps/{id}/status` of an isolated app: its connections on both instances, not the
    server's; the default app's keeps counting every connection, as laravel-echo-server."""
    prefix = f"app{secrets.token_hex(3)}_database_"
    apps = [{"appId": app_id, "key": key, "secret": secret, "apiKey": f"{app_id}-api"}
            for key, (app_id, secret) in APPS.items()]
    first, second = await _cluster(make_server, auth_backend, prefix, apps=apps)
    clients = [await pusher_client(first, "a-key"), await pusher_client(first, "b-key"),
               await pusher_client(second, "a-key"), await pusher_client(second, "b-key"),
               await pusher_client(second, "b-key")]
    sio = await RawWebSocket.connect(first, "EIO=4&transport=websocket")  # the default app's
    assert (await sio.recv_text()).startswith("0")

    async def counts() -> tuple[int, int, int]:
        found = []
        async with http_client() as http:
            for path in ("3001/status?auth_key=3001-api", "3002/status?auth_key=3002-api",
                         "test-app/status?auth_key=test-key"):
                async with http.get(f"{server_url(first)}/apps/{path}") as response:
                    assert response.status == 200
                    found.append((await response.json())["subscription_count"])
        return found[0], found[1], found[2]

    # The other instance's figures arrive with its heartbeat (100 ms).
    deadline = asyncio.get_running_loop().time() + 5
    while (found := await counts()) != (2, 3, 6):
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.05)
    assert len(clients) == 5
