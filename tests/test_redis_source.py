"""The Redis subscriber as Laravel's RedisBroadcaster meets it (protocol sheet §6):
the key prefix, malformed messages, toOthers, size, order, the socket-id room,
and a Redis restart under a running server."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from echo_server.process.server import EchoServer
from tests.conftest import RedisProcess, ServerFactory, laravel_message, requires_node, server_url
from tests.support.node_client import NodeEchoClient
from tests.support.waits import ClientFactory, redis_runner, wait_member, wait_until

pytestmark = requires_node

PREFIX = "laravel_database_"
STACK = "echo1-sio2"


async def _prefixed(make_server: ServerFactory, prefix: str = PREFIX) -> EchoServer:
    return await make_server({"databaseConfig": {"redis": {"keyPrefix": prefix}}})


async def _client(server: EchoServer, node_client: ClientFactory, *channels: str,
                  stack: str = STACK, transport: str = "websocket",
                  **kwargs: Any) -> tuple[NodeEchoClient, str]:
    """A raw-tracing tab subscribed to ``channels`` (with a generic listener)."""
    client = await node_client(stack, server_url(server), transports=transport, raw=True,
                               **kwargs)
    socket_id = (await client.expect("connected"))["socketId"]
    for channel in channels:
        await client.command({"cmd": "channel", "channel": channel, "listen": [".e", ".marker"]})
        await wait_member(server, channel, socket_id)
    return client, socket_id


def _raw_events(client: NodeEchoClient) -> list[tuple[str, list[Any]]]:
    return [(m["event"], m["args"]) for m in client.history if m.get("type") == "raw"]


# --------------------------------------------------------------------------- prefix

async def test_key_prefix_is_stripped_exactly_once(make_server: ServerFactory,
                                                   node_client: ClientFactory,
                                                   redis: aioredis.Redis) -> None:
    server = await _prefixed(make_server)
    client, _ = await _client(server, node_client, "leads", PREFIX + "leads")

    await redis.publish("leads", laravel_message("e", {"n": 1}))  # no prefix: not matched
    await redis.publish(PREFIX + PREFIX + "leads", laravel_message("e", {"n": 2}))
    await redis.publish(PREFIX + "leads", laravel_message("marker", {"n": 3}))

    await client.expect("raw", event="marker")
    assert _raw_events(client) == [
        ("e", [PREFIX + "leads", {"n": 2, "socket": None}]),
        ("marker", ["leads", {"n": 3, "socket": None}]),
    ]


@pytest.mark.parametrize("laravel_prefix", ["laravel_database_", "laravel-database-"])
async def test_without_key_prefix_channels_are_verbatim_and_the_gotcha_is_explained(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        caplog: pytest.LogCaptureFixture, laravel_prefix: str) -> None:
    caplog.set_level(logging.WARNING, logger="broadcaster.redis")
    server = await make_server()
    client, _ = await _client(server, node_client, "leads", laravel_prefix + "leads")

    await redis.publish("leads", laravel_message("e", {"n": 1}))
    await client.expect("raw", event="e", args=["leads", {"n": 1, "socket": None}])
    assert not [r for r in caplog.records if r.name == "broadcaster.redis"]

    for n in (2, 3):
        await redis.publish(laravel_prefix + "leads", laravel_message("e", {"n": n}))
        await client.expect("raw", event="e",
                            args=[laravel_prefix + "leads", {"n": n, "socket": None}])
    hints = [r.getMessage() for r in caplog.records if r.name == "broadcaster.redis"]
    assert len(hints) == 1, hints
    assert "keyPrefix" in hints[0]
    assert json.dumps(laravel_prefix) in hints[0]  # the exact value to put in the config


# --------------------------------------------------------------------------- bad messages

async def test_malformed_messages_are_counted_and_dropped(make_server: ServerFactory,
                                                          node_client: ClientFactory,
                                                          redis: aioredis.Redis) -> None:
    server = await _prefixed(make_server)
    clients = [await _client(server, node_client, "leads", stack=stack)
               for stack in ("echo1-sio2", "echo2-sio4")]
    bad = [
        json.dumps({"data": {"n": 1}}),                  # no event at all
        json.dumps({"event": None, "data": {"n": 2}}),   # the reference emits 42[null,...]
        json.dumps({"event": 5, "data": {"n": 3}}),
        json.dumps({"event": {"x": 1}, "data": {"n": 4}}),
        "not json {",
        json.dumps(["e", {"n": 5}]),
        json.dumps("e"),
    ]
    for payload in bad:
        await redis.publish(PREFIX + "leads", payload)
    await redis.publish(PREFIX + "leads", laravel_message("e", {"n": 6}))

    for client, _ in clients:
        await client.expect("raw", event="e")
        assert _raw_events(client) == [("e", ["leads", {"n": 6, "socket": None}])]
        assert not client.backlog("disconnected")
        assert not client.backlog("error"), client.backlog("error")
    counts = server.errors.counts
    assert counts["bad_json"] + counts["bad_message"] == len(bad)
    assert counts["bad_json"] == 1


# --------------------------------------------------------------------------- toOthers

async def test_socket_field_excludes_only_a_connected_sender(make_server: ServerFactory,
                                                             node_client: ClientFactory,
                                                             redis: aioredis.Redis) -> None:
    server = await _prefixed(make_server)
    a, a_id = await _client(server, node_client, "leads")
    b, b_id = await _client(server, node_client, "leads", stack="echo2-sio4")

    def message(n: int, socket: Any) -> str:
        return json.dumps({"event": "e", "data": {"n": n}, "socket": socket})

    await redis.publish(PREFIX + "leads", message(1, a_id))
    await redis.publish(PREFIX + "leads", message(2, b_id))
    await redis.publish(PREFIX + "leads", message(3, "not-a-connected-socket"))
    await redis.publish(PREFIX + "leads", message(4, 12345))
    await redis.publish(PREFIX + "leads", message(5, {"id": a_id}))
    await redis.publish(PREFIX + "leads", message(6, [a_id]))
    await redis.publish(PREFIX + "leads", message(7, ""))
    await redis.publish(PREFIX + "leads", message(8, None))
    for client in (a, b):
        await client.expect("raw", event="e", args=["leads", {"n": 8}])
    assert [args[1]["n"] for _, args in _raw_events(a)] == [2, 3, 4, 5, 6, 7, 8]
    assert [args[1]["n"] for _, args in _raw_events(b)] == [1, 3, 4, 5, 6, 7, 8]


# --------------------------------------------------------------------------- size and order

@pytest.mark.parametrize(("stack", "transport"), [
    ("echo1-sio2", "websocket"), ("echo1-sio2", "polling"),
    ("echo2-sio4", "websocket"), ("echo2-sio4", "polling"),
])
async def test_two_megabyte_message_is_delivered_intact(make_server: ServerFactory,
                                                        node_client: ClientFactory,
                                                        redis: aioredis.Redis, stack: str,
                                                        transport: str) -> None:
    server = await _prefixed(make_server)
    client, _ = await _client(server, node_client, "leads", stack=stack, transport=transport)
    # Astral characters count twice in EIO3 polling lengths; mix them in.
    blob = ("Ayşe 🎯 " * 1000 + "x" * 1000) * 200
    message = laravel_message("e", {"blob": blob})
    assert len(message.encode()) > 2_000_000
    await redis.publish(PREFIX + "leads", message)
    got = await client.expect("raw", event="e", timeout=15)
    assert got["args"] == ["leads", {"blob": blob, "socket": None}]


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_burst_keeps_publish_order(make_server: ServerFactory,
                                         node_client: ClientFactory, redis: aioredis.Redis,
                                         transport: str) -> None:
    server = await _prefixed(make_server)
    client, _ = await _client(server, node_client, "leads", "other", transport=transport)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(200):
            pipe.publish(PREFIX + ("leads" if n % 3 else "other"),
                         laravel_message("e", {"n": n}))
        await pipe.execute()
    await client.expect("raw", event="e", args=["other", {"n": 198, "socket": None}])
    await client.expect("raw", event="e", args=["leads", {"n": 199, "socket": None}])
    received = [(args[0], args[1]["n"]) for _, args in _raw_events(client)]
    assert received == [("leads" if n % 3 else "other", n) for n in range(200)]


# --------------------------------------------------------------------------- socket-id room

@pytest.mark.parametrize("stack", ["echo1-sio2", "echo2-sio4"])
async def test_publish_to_socket_id_reaches_that_socket(make_server: ServerFactory,
                                                        node_client: ClientFactory,
                                                        redis: aioredis.Redis,
                                                        stack: str) -> None:
    """socket.io 2 puts every socket in a room named after its id; with
    socket.io-client 4 that id is the namespace sid Echo reports."""
    server = await _prefixed(make_server)
    a, a_id = await _client(server, node_client, "leads", stack=stack)
    b, _ = await _client(server, node_client, "leads", stack=stack)
    assert a_id == await a.socket_id()
    await redis.publish(PREFIX + a_id, laravel_message("e", {"n": 1}))
    await redis.publish(PREFIX + "leads", laravel_message("marker", {"n": 2}))
    for client in (a, b):
        await client.expect("raw", event="marker")
    assert _raw_events(a) == [("e", [a_id, {"n": 1, "socket": None}]),
                              ("marker", ["leads", {"n": 2, "socket": None}])]
    assert _raw_events(b) == [("marker", ["leads", {"n": 2, "socket": None}])]


# --------------------------------------------------------------------------- outage

async def test_redis_restart_under_a_running_server(make_server: ServerFactory,
                                                    node_client: ClientFactory,
                                                    redis_process: RedisProcess | None,
                                                    redis_url: str) -> None:
    if redis_process is None:
        pytest.skip("REDIS_URL points at an external Redis, which this test cannot restart")
    server = await _prefixed(make_server)
    client, _ = await _client(server, node_client, "leads")
    runner = redis_runner(server)
    assert runner.health.connected and runner.health.outages == 0

    async def publish(n: int) -> None:
        publisher = aioredis.Redis.from_url(redis_url)
        try:
            await publisher.publish(PREFIX + "leads", laravel_message("e", {"n": n}))
        finally:
            await publisher.aclose()

    await publish(1)
    await client.expect("raw", event="e", args=["leads", {"n": 1, "socket": None}])

    redis_process.stop()
    try:
        await wait_until(lambda: not runner.health.connected, "the runner saw the outage")
        assert runner.health.outages == 1
        assert runner.health.last_error
    finally:
        redis_process.start()
    await wait_until(lambda: runner.health.connected, "the runner reconnected", timeout=15)
    assert runner.health.outages == 1

    await publish(2)
    await client.expect("raw", event="e", args=["leads", {"n": 2, "socket": None}])
    assert not client.backlog("disconnected"), "clients must not notice a Redis outage"
    assert [args[1]["n"] for _, args in _raw_events(client)] == [1, 2]


@pytest.mark.parametrize("codec", ["default", "orjson", "stdlib"])
async def test_non_finite_numbers_follow_javascript(make_server: ServerFactory,
                                                    node_client: ClientFactory,
                                                    redis: aioredis.Redis,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    codec: str) -> None:
    """``NaN`` is not JSON (the reference's JSON.parse drops the message) and
    ``1e400`` parses to Infinity, which JSON.stringify sends as null. Either
    way clients must never get a frame their JSON.parse rejects, with or
    without the optional parsers (pysimdjson, orjson)."""
    if codec in ("orjson", "stdlib"):
        monkeypatch.setattr("echo_common.jsoncodec._fast", None)
    if codec == "stdlib":
        monkeypatch.setattr("echo_common.jsoncodec._orjson", None)
    server = await _prefixed(make_server)
    clients = [await _client(server, node_client, "leads", stack=stack)
               for stack in ("echo1-sio2", "echo2-sio4")]
    await redis.publish(PREFIX + "leads", '{"event":"e","data":{"n":1,"x":NaN}}')
    await redis.publish(PREFIX + "leads", '{"event":"e","data":{"n":2,"x":-Infinity}}')
    await redis.publish(PREFIX + "leads", '{"event":"e","data":{"n":3,"x":1e400}}')
    await redis.publish(PREFIX + "leads", laravel_message("marker", {"n": 4}))
    for client, _ in clients:
        await client.expect("raw", event="marker")
        assert _raw_events(client) == [("e", ["leads", {"n": 3, "x": None}]),
                                       ("marker", ["leads", {"n": 4, "socket": None}])]
        assert not client.backlog("disconnected")
        assert not client.backlog("error"), client.backlog("error")
    assert server.errors.counts["bad_json"] == 2
