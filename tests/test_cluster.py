"""Three instances on one Redis behave as one server: broadcasts once per client,
toOthers wherever the sender sits, whispers and presence across instances,
cluster-wide API figures, and the members of a killed instance leaving in time."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from echo_server.process.server import EchoServer
from tests.conftest import laravel_message, requires_node, server_url
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.instance import instance_process
from tests.support.node_client import NodeEchoClient
from tests.support.waits import wait_member, wait_until

pytestmark = requires_node

FAST_CLUSTER = {"heartbeatInterval": 100, "livenessTtl": 400}
STACKS = ["echo1-sio2", "echo2-sio2", "echo2-sio4"]


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


def _as_member(call: AuthCall) -> dict[str, Any]:
    user_id = json.loads(call.headers["X-User-Id"])
    return {"channel_data": {"user_id": user_id, "user_info": {"name": f"user {user_id}"}}}


def _options(auth_backend: AuthBackend, prefix: str) -> dict[str, Any]:
    return {"authHost": auth_backend.url, "database": "redis",
            "databaseConfig": {"redis": {"keyPrefix": prefix}}, "cluster": FAST_CLUSTER}


async def _three(make_server, auth_backend: AuthBackend, prefix: str) -> list[EchoServer]:
    servers = [await make_server(_options(auth_backend, prefix)) for _ in range(3)]
    assert all(s.cluster is not None for s in servers)
    return servers


async def _client(node_client, server: EchoServer, stack: str, user: int | None = None) -> tuple:
    kwargs: dict[str, Any] = {"transports": "websocket"}
    if user is not None:
        kwargs["auth_headers"] = {"X-User-Id": json.dumps(user)}
    client = await node_client(stack, server_url(server), **kwargs)
    connected = await client.expect("connected")
    return client, connected["socketId"]


async def _three_listening(make_server, node_client, auth_backend: AuthBackend, prefix: str
                           ) -> tuple[list[EchoServer], list[tuple[NodeEchoClient, str]]]:
    """Three instances, each with one client (a stack of each generation) listening on
    leads-management: the servers, and (client, socket id) per server."""
    servers = await _three(make_server, auth_backend, prefix)
    clients = []
    for server, stack in zip(servers, STACKS, strict=True):
        client, socket_id = await _client(node_client, server, stack)
        await client.command({"cmd": "channel", "channel": "leads-management",
                              "listen": [".lead.assigned"]})
        await wait_member(server, "leads-management", socket_id)
        clients.append((client, socket_id))
    return servers, clients


async def test_broadcasts_and_to_others_across_instances(make_server, node_client,
                                                         redis: aioredis.Redis,
                                                         auth_backend: AuthBackend,
                                                         prefix: str) -> None:
    _, clients = await _three_listening(make_server, node_client, auth_backend, prefix)

    sender_id = clients[0][1]
    await redis.publish(prefix + "leads-management",
                        laravel_message("lead.assigned", {"n": 1}, socket_id=sender_id))
    await redis.publish(prefix + "leads-management", laravel_message("lead.assigned", {"n": 2}))
    for index, (client, _) in enumerate(clients):
        first = await client.expect("event", event=".lead.assigned")
        # Each client gets each broadcast exactly once; the sender skips the toOthers one.
        assert first["data"]["n"] == (2 if index == 0 else 1)
        if index:
            second = await client.expect("event", event=".lead.assigned")
            assert second["data"]["n"] == 2
        await client.expect_none("event", within=0.2, event=".lead.assigned")


async def test_an_api_publish_reaches_every_instance(make_server, node_client,
                                                    auth_backend: AuthBackend,
                                                    prefix: str) -> None:
    """laravel-echo-server's HTTP API (and Pusher's) answer on one instance; the clients
    of all of them get the event, once, toOthers kept."""
    servers, clients = await _three_listening(make_server, node_client, auth_backend, prefix)
    async with aiohttp.ClientSession() as http:
        for n, sender in ((1, clients[2][1]), (2, None)):
            body = {"channel": "leads-management", "name": "lead.assigned", "data": {"n": n},
                    "socket_id": sender}
            async with http.post(f"{server_url(servers[0])}/apps/test-app/events"
                                 "?auth_key=test-key", json=body) as response:
                assert response.status == 200
    for index, (client, _) in enumerate(clients):
        got = [(await client.expect("event", event=".lead.assigned"))["data"]["n"]
               for _ in range(1 if index == 2 else 2)]
        assert got == ([2] if index == 2 else [1, 2])
        await client.expect_none("event", within=0.2, event=".lead.assigned")


async def test_a_lone_instance_relays_no_api_publish(make_server, node_client,
                                                     auth_backend: AuthBackend,
                                                     prefix: str) -> None:
    """With no other instance, an API publish costs no relay message; an instance that
    starts says so at once (heartbeats a minute apart here), and its clients get the next."""
    options = {**_options(auth_backend, prefix),
               "cluster": {"heartbeatInterval": 60_000, "livenessTtl": 120_000}}
    first = await make_server(options)
    assert first.cluster is not None

    async def publish(http: aiohttp.ClientSession, n: int) -> None:
        body = {"channel": "leads-management", "name": "lead.assigned", "data": {"n": n}}
        async with http.post(f"{server_url(first)}/apps/test-app/events?auth_key=test-key",
                             json=body) as response:
            assert response.status == 200

    async with aiohttp.ClientSession() as http:
        await publish(http, 1)
        assert first.cluster.relayed_out == 0 and not first.cluster._outbox
        second = await make_server(options)
        client, socket_id = await _client(node_client, second, "echo2-sio4")
        await client.command({"cmd": "channel", "channel": "leads-management",
                              "listen": [".lead.assigned"]})
        await wait_member(second, "leads-management", socket_id)
        await publish(http, 2)
    assert (await client.expect("event", event=".lead.assigned"))["data"] == {"n": 2}
    await wait_until(lambda: first.cluster.relayed_out == 1, "relayed")


async def test_whispers_and_presence_across_instances(make_server, node_client,
                                                      auth_backend: AuthBackend,
                                                      prefix: str) -> None:
    auth_backend.rules["presence-room"] = _as_member
    servers = await _three(make_server, auth_backend, prefix)
    a, a_id = await _client(node_client, servers[0], "echo1-sio2", user=1)
    await a.command({"cmd": "join", "channel": "room", "whisper_listen": ["typing"]})
    await a.expect("presence_here")
    b, b_id = await _client(node_client, servers[1], "echo2-sio4", user=2)
    await b.command({"cmd": "join", "channel": "room", "whisper_listen": ["typing"]})
    here = await b.expect("presence_here")
    assert [u["name"] for u in here["users"]] == ["user 2", "user 1"]
    # A (instance 0) hears B (instance 1) joining.
    joined = await a.expect("presence_joining")
    assert joined["user"] == {"name": "user 2"}

    # The second tab of user 1, on the third instance: one member, no joining.
    c, c_id = await _client(node_client, servers[2], "echo2-sio2", user=1)
    await c.command({"cmd": "join", "channel": "room", "whisper_listen": ["typing"]})
    here = await c.expect("presence_here")
    assert sorted(u["name"] for u in here["users"]) == ["user 1", "user 2"]

    # A whisper from instance 1 reaches instances 0 and 2, not its sender.
    await b.command({"cmd": "whisper", "channel": "room", "event": "typing",
                     "data": {"who": 2}})
    assert (await a.expect("whisper", event="typing"))["data"] == {"who": 2}
    assert (await c.expect("whisper", event="typing"))["data"] == {"who": 2}
    await b.expect_none("whisper", within=0.2)
    await b.expect_none("presence_joining", within=0.0)

    # User 1 closes one tab: still a member. Closes the other: leaving, on instance 1.
    await a.close()
    await b.expect_none("presence_leaving", within=0.3)
    await c.close()
    left = await b.expect("presence_leaving")
    assert left["user"] == {"name": "user 1"}
    assert {m.user_id for m in await servers[1].core.presence.store.members("presence-room")} \
        == {2}
    del a_id, b_id, c_id


async def test_api_reports_the_whole_cluster(make_server, node_client,
                                             auth_backend: AuthBackend, prefix: str) -> None:
    # A generous liveness TTL: a busy machine must not expire the figures being summed.
    options = {**_options(auth_backend, prefix),
               "cluster": {"heartbeatInterval": 100, "livenessTtl": 3000}}
    servers = [await make_server(options) for _ in range(3)]
    for server, stack in zip(servers, STACKS, strict=True):
        client, socket_id = await _client(node_client, server, stack)
        await client.command({"cmd": "channel", "channel": "leads-management", "listen": []})
        await wait_member(server, "leads-management", socket_id)
    base = server_url(servers[0])
    async with aiohttp.ClientSession() as http:
        async def figures() -> tuple[int, dict]:
            async with http.get(f"{base}/apps/test-app/status?auth_key=test-key") as r:
                status = await r.json()
            async with http.get(f"{base}/apps/test-app/channels?auth_key=test-key") as r:
                channels = await r.json()
            return status["subscription_count"], channels["channels"]

        # Peers' figures are as old as their last heartbeat: wait for one taken after
        # every subscription landed.
        deadline = time.monotonic() + 5
        while True:
            count, channels = await figures()
            subscribed = channels.get("leads-management", {}).get("subscription_count")
            if (count == 3 and subscribed == 3) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert count == 3
        assert channels["leads-management"] == {"subscription_count": 3, "occupied": True}
        async with http.get(f"{base}/apps/test-app/channels/leads-management"
                            "?auth_key=test-key") as r:
            assert (await r.json())["subscription_count"] == 3


async def test_members_of_a_killed_instance_leave(tmp_path: Path, make_server, node_client,
                                                  redis_url: str, auth_backend: AuthBackend,
                                                  prefix: str) -> None:
    """kill -9 of an instance: its presence members are removed and their leaving is
    announced on the survivors within the liveness TTL plus a heartbeat."""
    auth_backend.rules["presence-room"] = _as_member
    survivor = await make_server(_options(auth_backend, prefix))
    options = {"clients": [{"appId": "a", "key": "k"}], **_options(auth_backend, prefix)}
    async with instance_process(tmp_path, redis_url, options) as (proc, other):
        watcher, _ = await _client(node_client, survivor, "echo2-sio4", user=1)
        await watcher.command({"cmd": "join", "channel": "room"})
        await watcher.expect("presence_here")
        doomed = await node_client("echo1-sio2", server_url(other), transports="websocket",
                                   reconnection=False, auth_headers={"X-User-Id": "2"})
        await doomed.expect("connected")
        await doomed.command({"cmd": "join", "channel": "room"})
        await watcher.expect("presence_joining")

        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed_at = time.monotonic()
        left = await watcher.expect("presence_leaving", timeout=10)
        assert left["user"] == {"name": "user 2"}
        assert time.monotonic() - killed_at < 0.4 + 0.1 + 2.0
        members = await survivor.core.presence.store.members("presence-room")
        assert [m.user_id for m in members] == [1]


async def _two_members(make_server, node_client, auth_backend: AuthBackend, prefix: str,
                       stacks: tuple[str, str]) -> tuple[list[EchoServer], Any, Any]:
    """Two instances; user 1 in presence-room on the first, then user 2 on the second."""
    auth_backend.rules["presence-room"] = _as_member
    servers = [await make_server(_options(auth_backend, prefix)) for _ in range(2)]
    clients = []
    for user, (server, stack) in enumerate(zip(servers, stacks, strict=True), start=1):
        client, _ = await _client(node_client, server, stack, user=user)
        await client.command({"cmd": "join", "channel": "room"})
        await client.expect("presence_here")
        clients.append(client)
    await clients[0].expect("presence_joining")
    return servers, clients[0], clients[1]


async def _echo_keys(redis: aioredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{{{prefix}echo}}*")]


async def test_presence_is_written_again_when_redis_loses_it(make_server, node_client,
                                                             redis: aioredis.Redis,
                                                             auth_backend: AuthBackend,
                                                             prefix: str) -> None:
    """Redis restarted without persistence (or failed over to a replica that lagged): each
    instance finds its liveness key gone at its next beat and writes its members again,
    quietly, since nobody was told they left."""
    servers, a, b = await _two_members(make_server, node_client, auth_backend, prefix,
                                       ("echo1-sio2", "echo2-sio4"))

    keys = await _echo_keys(redis, prefix)
    assert keys
    await redis.delete(*keys)
    assert not await servers[0].core.presence.store.members("presence-room")

    for server in servers:
        await wait_until(lambda s=server: s.cluster.restored >= 1, "the members written again")
    members = await servers[0].core.presence.store.members("presence-room")
    assert sorted(m.user_id for m in members) == [1, 2]
    # A new tab sees both; the two that were there hear nothing (no one left, no one came).
    c, _ = await _client(node_client, servers[1], "echo2-sio2", user=3)
    await c.command({"cmd": "join", "channel": "room"})
    here = await c.expect("presence_here")
    assert sorted(u["name"] for u in here["users"]) == ["user 1", "user 2", "user 3"]
    for client in (a, b):
        assert (await client.expect("presence_joining"))["user"] == {"name": "user 3"}
        await client.expect_none("presence_leaving", within=0.0)
        await client.expect_none("presence_joining", within=0.2)


async def test_members_purged_while_an_instance_was_cut_off_come_back(
        make_server, node_client, auth_backend: AuthBackend, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An instance that could not reach Redis for longer than the liveness TTL was taken for
    dead: the others purged its members and announced them leaving. When it reaches Redis
    again, it writes them back and announces them joining."""
    servers, watcher, cut_off = await _two_members(make_server, node_client, auth_backend,
                                                   prefix, ("echo2-sio4", "echo1-sio2"))

    cluster = servers[1].cluster
    real_beat = cluster._beat

    async def unreachable() -> None:
        raise ConnectionError("Redis is unreachable from here")

    monkeypatch.setattr(cluster, "_beat", unreachable)
    left = await watcher.expect("presence_leaving", timeout=10)
    assert left["user"] == {"name": "user 2"}
    assert [m.user_id for m in await servers[0].core.presence.store.members("presence-room")] \
        == [1]

    monkeypatch.setattr(cluster, "_beat", real_beat)
    back = await watcher.expect("presence_joining", timeout=10)
    assert back["user"] == {"name": "user 2"}
    members = await servers[0].core.presence.store.members("presence-room")
    assert sorted(m.user_id for m in members) == [1, 2]
    assert cluster.restored == 1
    # Here the relay still worked, so the cut-off instance's own clients heard the leaving
    # too (in a real partition they would not): they hear the return as well.
    assert (await cut_off.expect("presence_leaving"))["user"] == {"name": "user 2"}
    assert (await cut_off.expect("presence_joining"))["user"] == {"name": "user 2"}
