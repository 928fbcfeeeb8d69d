"""Two instances on Redis Sentinel, on a Redis Cluster, and behind nginx: real processes on
loopback ports, real Echo clients.

- Sentinel (a primary, a replica, one Sentinel): broadcasts and presence across the two
  instances, then ``kill -9`` of the primary; once the Sentinel has promoted the replica,
  broadcasts, presence and whispers work again without restarting anything.
- Cluster (three primaries): keys in one slot, presence and whispers across instances, a
  Laravel PUBLISH sent to a node neither source listens on, then a node the subscribers sit on
  dies and they move to another.
- nginx with the README's configuration in front of two instances: polling, upgrading and
  websocket clients, each request of a polling session on one instance.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from broadcaster import Broadcaster
from echo_server.config import ConfigError, load_config
from echo_server.core.presence import key_tag
from echo_server.process.server import EchoServer
from echo_server.transport.engine import EngineServer
from tests.conftest import (
    ClusterSetup,
    SentinelSetup,
    free_port,
    laravel_message,
    requires_node,
    server_url,
)
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.http import http_client
from tests.support.node_client import NodeEchoClient
from tests.support.waits import ClientFactory, redis_runner, wait_member, wait_until

ROOT = Path(__file__).resolve().parents[1]
FAST_CLUSTER = {"heartbeatInterval": 100, "livenessTtl": 400}


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


def _as_member(call: AuthCall) -> dict[str, Any]:
    user_id = json.loads(call.headers["X-User-Id"])
    return {"channel_data": {"user_id": user_id, "user_info": {"name": f"user {user_id}"}}}


def _options(auth_backend: AuthBackend, prefix: str, redis: dict[str, Any]) -> dict[str, Any]:
    return {"authHost": auth_backend.url, "database": "redis",
            "databaseConfig": {"redis": {**redis, "keyPrefix": prefix}}, "cluster": FAST_CLUSTER}


async def _member(node_client: ClientFactory, url: str, stack: str, user: int,
                  **kwargs: Any) -> tuple[NodeEchoClient, str, list[str]]:
    """A tab of ``user`` listening on ``news`` and in ``presence-room``; returns the names
    ``here()`` gave it."""
    kwargs.setdefault("transports", "websocket")
    client = await node_client(stack, url, auth_headers={"X-User-Id": json.dumps(user)},
                               **kwargs)
    socket_id = (await client.expect("connected"))["socketId"]
    await client.command({"cmd": "channel", "channel": "news", "listen": [".news.posted"]})
    await client.command({"cmd": "join", "channel": "room", "whisper_listen": ["typing"]})
    here = await client.expect("presence_here")
    return client, socket_id, sorted(u["name"] for u in here["users"])


async def _publish(port: int, prefix: str, n: int) -> None:
    """What Laravel's RedisBroadcaster sends, to one particular server."""
    client = aioredis.Redis(port=port)
    try:
        await client.publish(prefix + "news", laravel_message("news.posted", {"n": n}))
    finally:
        await client.aclose()


async def _all_get(clients: list[NodeEchoClient], n: int) -> None:
    for client in clients:
        await client.expect("event", timeout=10, event=".news.posted",
                            data={"n": n, "socket": None})


def _server_of(servers: list[EchoServer], socket_id: str) -> EchoServer:
    return next(s for s in servers if socket_id in s.core.connections)


# --------------------------------------------------------------------------- configuration

def test_redis_url_forms(tmp_path: Path) -> None:
    """ioredis's Sentinel form and our clusterNodes become the URLs every Redis use takes."""
    def url(redis: dict[str, Any]) -> tuple[str, list[str]]:
        (tmp_path / "laravel-echo-server.json").write_text(json.dumps(
            {"databaseConfig": {"redis": redis}}))
        config = load_config("laravel-echo-server.json", str(tmp_path), environ={},
                             cwd=str(tmp_path))
        return config.redis_url, config.source_urls

    assert url({"sentinels": [{"host": "10.0.0.5", "port": 26379}, {"host": "10.0.0.6"}],
                "name": "mymaster", "password": "s3cret", "db": 2, "sentinelPassword": "x y",
                "keyPrefix": "laravel_database_"}) == (
        "redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6:26379/mymaster/2"
        "?sentinel_password=x%20y",
        ["redis+sentinel://:s3cret@10.0.0.5:26379,10.0.0.6:26379/mymaster/2"
         "?sentinel_password=x%20y&prefix=laravel_database_"])
    assert url({"clusterNodes": [{"host": "10.0.0.7", "port": 7000}, "10.0.0.8:7001"],
                "tls": True})[0] == "rediss+cluster://10.0.0.7:7000,10.0.0.8:7001"
    assert url({"url": "redis+cluster://a:7000"}) == ("redis+cluster://a:7000",
                                                      ["redis+cluster://a:7000"])
    assert key_tag("laravel_database_") == "{laravel_database_echo}"
    assert key_tag("{odd}") == "{oddecho}"
    with pytest.raises(ConfigError, match="needs `name`"):
        url({"sentinels": [{"host": "10.0.0.5"}]})


# --------------------------------------------------------------------------- Sentinel

@requires_node
async def test_sentinel_failover_keeps_broadcasts_and_presence(
        redis_sentinel: SentinelSetup, make_server, node_client: ClientFactory,
        auth_backend: AuthBackend, prefix: str) -> None:
    auth_backend.rules["presence-room"] = _as_member
    sentinel = {"sentinels": [{"host": "127.0.0.1", "port": redis_sentinel.port}],
                "name": SentinelSetup.SERVICE}
    servers = [await make_server(_options(auth_backend, prefix, sentinel)) for _ in range(2)]
    primary = ("127.0.0.1", redis_sentinel.primary.port)
    replica = ("127.0.0.1", redis_sentinel.replica.port)
    assert all(redis_runner(s).source.master == primary for s in servers)  # type: ignore[attr-defined]

    a, a_id, _ = await _member(node_client, server_url(servers[0]), "echo1-sio2", 1)
    b, b_id, here = await _member(node_client, server_url(servers[1]), "echo2-sio4", 2)
    assert here == ["user 1", "user 2"]
    assert (await a.expect("presence_joining"))["user"] == {"name": "user 2"}
    await wait_member(servers[0], "news", a_id)
    await wait_member(servers[1], "news", b_id)
    await _publish(primary[1], prefix, 1)
    await _all_get([a, b], 1)

    # Replication is asynchronous: let the replica catch up, as it would in a quiet moment.
    old = aioredis.Redis(port=primary[1])
    try:
        assert await old.execute_command("WAIT", 1, 2000) == 1
    finally:
        await old.aclose()
    await redis_sentinel.fail_over()  # kill -9 of the primary; the replica is promoted

    for server in servers:
        runner = redis_runner(server)
        await wait_until(lambda r=runner: (r.source.master == replica  # type: ignore[attr-defined]
                                           and r.health.connected),
                         "the source follows the new master", timeout=15)
        await wait_until(lambda s=server: f":{replica[1]}/" in (s.cluster.relay_server or ""),
                         "the relay follows the new master", timeout=15)
    await _publish(replica[1], prefix, 2)
    await _all_get([a, b], 2)

    # Presence kept its members through the failover, and joins relay across instances again.
    c, _, here = await _member(node_client, server_url(servers[0]), "echo2-sio2", 3)
    assert here == ["user 1", "user 2", "user 3"]
    assert (await b.expect("presence_joining"))["user"] == {"name": "user 3"}
    await b.command({"cmd": "whisper", "channel": "room", "event": "typing", "data": {"b": 1}})
    assert (await a.expect("whisper", event="typing"))["data"] == {"b": 1}
    assert (await c.expect("whisper", event="typing"))["data"] == {"b": 1}
    await b.close()
    assert (await a.expect("presence_leaving"))["user"] == {"name": "user 2"}
    members = await servers[0].core.presence.store.members("presence-room")
    assert sorted(m.user_id for m in members) == [1, 3]


# --------------------------------------------------------------------------- Cluster

@requires_node
async def test_cluster_two_instances(redis_cluster: ClusterSetup, make_server,
                                     node_client: ClientFactory, auth_backend: AuthBackend,
                                     prefix: str) -> None:
    auth_backend.rules["presence-room"] = _as_member
    keys_node = await redis_cluster.node_for(key_tag(prefix))
    # The URL names the two other nodes: the client learns the third from them, and every
    # subscriber starts on a node that can die without taking the presence keys along.
    seeds = [n for n in redis_cluster.nodes if n is not keys_node]
    nodes = [{"host": "127.0.0.1", "port": n.port} for n in seeds]
    servers = [await make_server(_options(auth_backend, prefix, {"clusterNodes": nodes}))
               for _ in range(2)]

    a, a_id, _ = await _member(node_client, server_url(servers[0]), "echo1-sio2", 1)
    b, b_id, here = await _member(node_client, server_url(servers[1]), "echo2-sio4", 2)
    assert here == ["user 1", "user 2"]
    assert (await a.expect("presence_joining"))["user"] == {"name": "user 2"}
    on_keys_node = aioredis.Redis(port=keys_node.port)
    try:  # every key of ours sits on the node of the hash tag's slot
        keys = [k.decode() async for k in on_keys_node.scan_iter(match="{" + prefix + "*")]
    finally:
        await on_keys_node.aclose()
    tag = key_tag(prefix)
    assert f"{tag}:presence:presence-room" in keys and f"{tag}:presence-channels" in keys
    assert f"{tag}:instances" in keys

    # A PUBLISH on a node neither source is subscribed on reaches both.
    await wait_member(servers[0], "news", a_id)
    await wait_member(servers[1], "news", b_id)
    subscribed = {redis_runner(s).source.node[1] for s in servers}  # type: ignore[attr-defined]
    elsewhere = next(n for n in redis_cluster.nodes if n.port not in subscribed)
    await _publish(elsewhere.port, prefix, 1)
    await _all_get([a, b], 1)
    # Laravel's several-channel EVAL, through the publisher, on a Cluster URL.
    async with Broadcaster(f"{redis_cluster.url}?prefix={prefix}") as publisher:
        await publisher.publish(["news", "other"], "news.posted", {"n": 2})
    await _all_get([a, b], 2)
    await b.command({"cmd": "whisper", "channel": "room", "event": "typing", "data": {"b": 1}})
    assert (await a.expect("whisper", event="typing"))["data"] == {"b": 1}

    # The node most subscribers (sources and relays) sit on dies: they move to another.
    def ports() -> list[int]:
        found = [redis_runner(s).source.node[1] for s in servers]  # type: ignore[attr-defined]
        for server in servers:
            match = re.search(r":(\d+)/", server.cluster.relay_server or "")  # type: ignore[union-attr]
            found += [int(match.group(1))] if match else []
        return found
    count = collections.Counter(ports())
    victim = max(seeds, key=lambda n: count[n.port])
    assert count[victim.port] >= 2
    victim.stop()
    await wait_until(lambda: len(ports()) == 4 and victim.port not in ports()
                     and all(redis_runner(s).health.connected for s in servers),
                     "every subscriber moved off the dead node", timeout=15)
    await _publish(keys_node.port, prefix, 3)
    await _all_get([a, b], 3)
    c, _, here = await _member(node_client, server_url(servers[1]), "echo2-sio2", 3)
    assert here == ["user 1", "user 2", "user 3"]
    assert (await a.expect("presence_joining"))["user"] == {"name": "user 3"}
    await a.command({"cmd": "whisper", "channel": "room", "event": "typing", "data": {"a": 1}})
    assert (await b.expect("whisper", event="typing"))["data"] == {"a": 1}
    assert (await c.expect("whisper", event="typing"))["data"] == {"a": 1}


# --------------------------------------------------------------------------- nginx

def readme_nginx_config(ports: list[int], listen: int, access_log: Path) -> str:
    """The README's nginx block with this test's ports: the documented configuration is the
    tested one. The test's clients play the load balancer (X-Forwarded-For from 127.0.0.1)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```nginx\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no ```nginx block"
    config = block.group(1)
    for old, new in ((r"server 127\.0\.0\.1:6001;", f"server 127.0.0.1:{ports[0]};"),
                     (r"server 127\.0\.0\.1:6002;", f"server 127.0.0.1:{ports[1]};"),
                     (r"listen 80;", f"listen 127.0.0.1:{listen};"),
                     (r"set_real_ip_from [^;]+;", "set_real_ip_from 127.0.0.1;")):
        config, replaced = re.subn(old, new, config)
        assert replaced == 1, f"README's nginx block no longer has {old!r}"
    # Which instance served each request of which session, for the stickiness check.
    return ("    log_format sticky '$remote_addr $arg_sid $upstream_addr $status $msec';\n"
            f"    access_log {access_log} sticky;\n{config}")


async def _landing(base: str, servers: list[EchoServer], address: str) -> int:
    """Which instance a client at ``address`` lands on: one handshake through nginx."""
    async with http_client() as http, http.get(
            f"{base}/socket.io/?EIO=4&transport=polling",
            headers={"X-Forwarded-For": address}) as response:
        body = await response.text()
    sid = json.loads(body[body.index("{"):])["sid"]
    return next(i for i, s in enumerate(servers) if sid in s.part(EngineServer).sessions)


@requires_node
async def test_nginx_sticky_sessions(nginx, make_server, node_client: ClientFactory,
                                     auth_backend: AuthBackend, redis_url: str, prefix: str,
                                     tmp_path: Path) -> None:
    auth_backend.rules["presence-room"] = _as_member
    servers = [await make_server(_options(auth_backend, prefix, {})) for _ in range(2)]
    port = free_port()
    access_log = tmp_path / "sticky.log"
    nginx(readme_nginx_config([s.port for s in servers], port, access_log), port)
    base = f"http://127.0.0.1:{port}"

    # Client addresses (as a load balancer reports them) that hash to each instance.
    address: dict[int, str] = {}
    for i in range(1, 64):
        candidate = f"198.51.100.{i}"
        address.setdefault(await _landing(base, servers, candidate), candidate)
        if len(address) == 2:
            break
    assert len(address) == 2, "the hash sent every address to one instance"

    def at(index: int) -> dict[str, str]:
        return {"X-Forwarded-For": address[index]}

    # Polling only (EIO3), on instance 0: every poll must come back to it.
    a, a_id, _ = await _member(node_client, base, "echo1-sio2", 1, transports="polling",
                               extra_headers=at(0))
    # Polling then upgraded (EIO4 on instance 1, EIO3 on instance 0), and websocket only.
    b, b_id, here = await _member(node_client, base, "echo2-sio4", 2,
                                  transports="polling,websocket", extra_headers=at(1))
    c, c_id, _ = await _member(node_client, base, "echo2-sio2", 3,
                               transports="polling,websocket", extra_headers=at(0))
    d, d_id, _ = await _member(node_client, base, "echo2-sio4", 4)
    assert _server_of(servers, a_id) is servers[0] and _server_of(servers, c_id) is servers[0]
    assert _server_of(servers, b_id) is servers[1]
    assert here == ["user 1", "user 2"]  # presence spans both instances
    assert (await a.expect("presence_joining"))["user"] == {"name": "user 2"}  # relayed, polled

    for upgraded, socket_id in ((b, b_id), (c, c_id)):
        server = _server_of(servers, socket_id)
        await wait_until(lambda s=server, i=socket_id:
                         s.core.connections[i].session.transport_name == "websocket",
                         f"{upgraded.stack} upgraded to websocket through nginx")
    assert servers[0].core.connections[a_id].session.transport_name == "polling"

    for socket_id in (a_id, b_id, c_id, d_id):
        await wait_member(_server_of(servers, socket_id), "news", socket_id)
    async with Broadcaster(f"{redis_url}?prefix={prefix}") as publisher:
        await publisher.publish("news", "news.posted", {"n": 1})
    await _all_get([a, b, c, d], 1)
    await b.command({"cmd": "whisper", "channel": "room", "event": "typing", "data": {"b": 1}})
    assert (await a.expect("whisper", event="typing"))["data"] == {"b": 1}

    # Every request of the polling session went to one instance, and none was refused.
    a_sid = servers[0].core.connections[a_id].session.sid

    def a_requests() -> list[list[str]]:
        return [line.split() for line in access_log.read_text().splitlines()
                if f" {a_sid} " in line]
    def span() -> float:
        times = [float(r[4]) for r in a_requests()]
        return max(times) - min(times) if times else 0.0
    # Polls over more than two ping cycles (pingInterval 0.4 s), not just the first burst.
    await wait_until(lambda: span() > 1.0, "the polling client polled for a while", timeout=10)
    requests = a_requests()
    assert {r[2] for r in requests} == {f"127.0.0.1:{servers[0].port}"}, requests
    assert {r[3] for r in requests} == {"200"}, requests
    for client in (a, b, c, d):
        assert not [m for m in client.history if m.get("type") == "disconnected"], client.stack
