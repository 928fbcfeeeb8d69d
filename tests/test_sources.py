"""Sources other than Pub/Sub, against real servers with real Echo clients: Redis Streams
(replay across a server restart, exactly once, one consumer group per instance), PostgreSQL
LISTEN/NOTIFY (inline and table-backed payloads), Redis Sentinel (master resolved on every
reconnect), and each one's outage under a running server."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from broadcaster import Broadcaster
from broadcaster.sources.postgres import NOTIFY_LIMIT
from echo_server.config import load_config
from echo_server.process.ingest import SourceRunner
from echo_server.process.server import EchoServer
from tests.conftest import (
    PostgresProcess,
    RedisProcess,
    ServerFactory,
    _redis_server_binary,
    free_port,
    private_redis,
    requires_node,
    server_url,
)
from tests.support.node_client import NodeEchoClient
from tests.support.waits import ClientFactory, wait_member, wait_until

pytestmark = requires_node

CHANNEL = "leads-management"
WARMUP = 1.0  # seconds; long enough for a reconnecting client on a busy CI machine


def runner_of(server: EchoServer, kind: str) -> SourceRunner:
    return next(r for r in server.runners if r.source.kind == kind)


async def started(server: EchoServer, kind: str) -> SourceRunner:
    runner = runner_of(server, kind)
    await asyncio.wait_for(runner.connected_event.wait(), 10)
    return runner


async def listener(server: EchoServer, node_client: ClientFactory, stack: str = "echo1-sio2",
                   channel: str = CHANNEL, **kwargs: Any) -> NodeEchoClient:
    client = await node_client(stack, server_url(server), transports="websocket", **kwargs)
    socket_id = (await client.expect("connected"))["socketId"]
    await client.command({"cmd": "channel", "channel": channel, "listen": [".e"]})
    await wait_member(server, channel, socket_id)
    return client


def numbers(client: NodeEchoClient) -> list[int]:
    return [m["data"]["n"] for m in client.history if m.get("type") == "event"]


def metric(server: EchoServer, name: str, kind: str) -> float:
    assert server.metrics is not None
    text = server.metrics.render().decode()
    match = re.search(rf'^{name}(?:_total)?{{source="{kind}"[^}}]*}} (\S+)$', text, re.M)
    assert match, f"{name} for {kind} not in metrics"
    return float(match.group(1))


# --------------------------------------------------------------------------- Redis Streams

def stream_url(redis_url: str, stream: str, **extra: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"stream": stream, "warmup": WARMUP,
                                             "block": 0.2, **extra}.items())
    return redis_url.replace("redis://", "redis-stream://", 1) + "?" + query


async def stream_server(make_server: ServerFactory, url: str, instance: str,
                        **options: Any) -> tuple[EchoServer, SourceRunner]:
    server = await make_server({"sources": [url], "instanceId": instance, **options})
    return server, await started(server, "redis-stream")


async def pending(redis: aioredis.Redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


async def test_stream_delivers_and_acknowledges_after_fan_out(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        redis_url: str) -> None:
    url = stream_url(redis_url, "s-basic")
    server, runner = await stream_server(make_server, url, "a")
    clients = [await listener(server, node_client, stack) for stack in ("echo1-sio2",
                                                                        "echo2-sio4")]
    async with Broadcaster(url) as broadcaster:
        for n in range(3):
            await broadcaster.publish([CHANNEL, "other"], "e", {"n": n})
    for client in clients:
        for n in range(3):
            got = await client.expect("event", event=".e")
            assert got["data"] == {"n": n, "socket": None}
    await wait_until(lambda: runner.health.events == 6, "6 events counted (3 entries x 2)")
    assert await pending(redis, "s-basic", "echo-a") == 0
    entry = (await redis.xrange("s-basic"))[0][1]
    assert entry == {b"channels": b'["leads-management","other"]', b"event": b"e",
                     b"data": b'{"n":0,"socket":null}'}


async def test_stream_replays_what_was_published_while_the_server_was_down(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        redis_url: str) -> None:
    """A client with reconnection on; the server stops; an event is published; the server
    starts again: the client receives it exactly once (and nothing it had already got)."""
    url = stream_url(redis_url, "s-restart")
    port = free_port()
    first, _ = await stream_server(make_server, url, "restart", port=port)
    client = await listener(first, node_client, reconnection=True)
    async with Broadcaster(url) as broadcaster:
        await broadcaster.publish(CHANNEL, "e", {"n": 1})
        await client.expect("event", data={"n": 1, "socket": None})

        await first.stop(timeout=2)
        await client.expect("disconnected")
        await broadcaster.publish(CHANNEL, "e", {"n": 2})
        await broadcaster.publish(CHANNEL, "e", {"n": 3})

        second, _ = await stream_server(make_server, url, "restart", port=port)
        await client.expect("connected", timeout=10)
        await client.expect("event", timeout=10, data={"n": 2, "socket": None})
        await client.expect("event", data={"n": 3, "socket": None})
        await broadcaster.publish(CHANNEL, "e", {"n": 4})
        await client.expect("event", data={"n": 4, "socket": None})
    await client.expect_none("event", within=0.5)
    assert numbers(client) == [1, 2, 3, 4]
    assert await pending(redis, "s-restart", "echo-restart") == 0
    assert second.instance_id == "restart"


async def test_unacknowledged_entries_are_delivered_again_after_a_crash(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        redis_url: str) -> None:
    """Read but never acknowledged (the instance died between XREADGROUP and the fan-out):
    the restarted instance delivers those first, then the rest, in order."""
    url = stream_url(redis_url, "s-crash", warmup=0)
    async with Broadcaster(url) as broadcaster:
        await broadcaster.publish(CHANNEL, "e", {"n": 0})  # before the group: not replayed
        await redis.xgroup_create("s-crash", "echo-crash", id="$")
        for n in (1, 2):
            await broadcaster.publish(CHANNEL, "e", {"n": n})
        # The dead instance's read: entries 1 and 2 now sit in its pending list.
        assert len((await redis.xreadgroup("echo-crash", "crash", {"s-crash": ">"}))[0][1]) == 2
        await broadcaster.publish(CHANNEL, "e", {"n": 3})
        server, _ = await stream_server(make_server, url, "crash", subscribers={"redis": False})
        client = await listener(server, node_client)
        # warmup=0: reading may have started before the client subscribed; publish a marker
        # and check what the server delivered in total instead.
        await wait_until(lambda: runner_of(server, "redis-stream").health.events == 3,
                         "the pending entries and the new one were read")
        await broadcaster.publish(CHANNEL, "e", {"n": 4})
        await client.expect("event", data={"n": 4, "socket": None})
    assert await pending(redis, "s-crash", "echo-crash") == 0
    assert runner_of(server, "redis-stream").health.events == 4


async def test_two_instances_deliver_each_entry_once_to_each_client(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        redis_url: str) -> None:
    url = stream_url(redis_url, "s-two")
    a, _ = await stream_server(make_server, url, "one")
    b, _ = await stream_server(make_server, url, "two")
    clients = [await listener(a, node_client, "echo1-sio2"),
               await listener(a, node_client, "echo2-sio4"),
               await listener(b, node_client, "echo1-sio2"),
               await listener(b, node_client, "echo2-sio4")]
    async with Broadcaster(url) as broadcaster:
        for n in range(5):
            await broadcaster.publish(CHANNEL, "e", {"n": n})
    for client in clients:
        for n in range(5):
            await client.expect("event", data={"n": n, "socket": None})
    for client in clients:
        await client.expect_none("event", within=0.3)
        assert numbers(client) == [0, 1, 2, 3, 4]
    groups = {g["name"]: g for g in await redis.xinfo_groups("s-two")}
    assert set(groups) == {b"echo-one", b"echo-two"}
    assert all(g["pending"] == 0 for g in groups.values())


async def test_bad_stream_entries_are_counted_acknowledged_and_skipped(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        redis_url: str) -> None:
    url = stream_url(redis_url, "s-bad")
    server, runner = await stream_server(make_server, url, "bad")
    client = await listener(server, node_client)
    bad: list[dict[str, str]] = [
        {"event": "e", "data": "{}"},                                  # no channels
        {"channels": "[]", "event": "e", "data": "{}"},
        {"channels": "not json", "event": "e", "data": "{}"},
        {"channels": json.dumps([CHANNEL]), "data": "{}"},              # no event
        {"channels": json.dumps([CHANNEL]), "event": "e", "data": "{"},
        {"channels": json.dumps([CHANNEL, 5]), "event": "e", "data": "{}"},
    ]
    for fields in bad:
        await redis.xadd("s-bad", fields)  # type: ignore[arg-type]
    await redis.xadd("s-bad", {"channels": json.dumps([CHANNEL]), "event": "e",
                               "data": '{"n":1}', "socket": "nobody"})
    await client.expect("event", data={"n": 1})
    counts = server.errors.counts
    assert counts["bad_json"] + counts["bad_message"] == len(bad)
    await wait_until(lambda: runner.health.connected, "still connected")
    assert await pending(redis, "s-bad", "echo-bad") == 0


async def test_stream_source_rides_out_a_redis_restart(
        make_server: ServerFactory, node_client: ClientFactory,
        redis_process: RedisProcess | None, redis_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    if redis_process is None:
        pytest.skip("REDIS_URL points at an external Redis, which this test cannot restart")
    url = stream_url(redis_url, "s-outage")
    server, runner = await stream_server(make_server, url, "outage",
                                         subscribers={"redis": False})
    client = await listener(server, node_client)
    async with Broadcaster(url) as broadcaster:
        await broadcaster.publish(CHANNEL, "e", {"n": 1})
        await client.expect("event", data={"n": 1, "socket": None})
        assert metric(server, "echo_source_up", "redis-stream") == 1

        redis_process.stop()
        try:
            await wait_until(lambda: not runner.health.connected, "the outage was seen")
            assert metric(server, "echo_source_up", "redis-stream") == 0
            assert metric(server, "echo_source_outages", "redis-stream") == 1
        finally:
            redis_process.start()
        await wait_until(lambda: runner.health.connected, "reconnected", timeout=15)
        # Redis came back empty (no persistence): the group was re-created where we were.
        await broadcaster.publish(CHANNEL, "e", {"n": 2})
        await client.expect("event", data={"n": 2, "socket": None}, timeout=10)
    assert metric(server, "echo_source_up", "redis-stream") == 1
    assert metric(server, "echo_source_outages", "redis-stream") == 1
    assert not client.backlog("disconnected")
    assert numbers(client) == [1, 2]
    down, back = outage_log(caplog)
    assert len([m for m in down if "redis-stream" in m]) == 1, down
    assert len([m for m in back if "redis-stream" in m]) == 1, back


def test_stream_source_needs_an_instance_id() -> None:
    from broadcaster.sources import source_from_url

    with pytest.raises(ValueError, match="instance"):
        source_from_url("redis-stream://127.0.0.1:6379/0?stream=x")


# --------------------------------------------------------------------------- PostgreSQL

def pg_source(postgres_url: str, listen: str = "echo_events", **extra: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"listen": listen, **extra}.items())
    return f"{postgres_url}{'&' if '?' in postgres_url else '?'}{query}"


async def test_postgres_notifications_reach_echo_clients(
        make_server: ServerFactory, node_client: ClientFactory, postgres_url: str) -> None:
    url = pg_source(postgres_url, "echo_test,echo_other", table="echo_payloads")
    server = await make_server({"sources": [url]}, redis=False)
    runner = await started(server, "postgres")
    leads = await listener(server, node_client, "echo1-sio2")
    private = await listener(server, node_client, "echo2-sio4", channel="admin-dashboard.5")
    big = "Ayşe 🎯 " * (NOTIFY_LIMIT // 4)
    async with Broadcaster(url) as broadcaster:
        await broadcaster.publish([CHANNEL, "admin-dashboard.5"], "e", {"n": 1})
        await broadcaster.publish(CHANNEL, "e", {"n": 2, "big": big})  # through the table
    async with Broadcaster(pg_source(postgres_url, "echo_other")) as other:
        await other.publish(CHANNEL, "e", {"n": 3})  # the second LISTEN channel
    assert (await leads.expect("event"))["data"] == {"n": 1, "socket": None}
    assert (await private.expect("event"))["data"] == {"n": 1, "socket": None}
    assert (await leads.expect("event"))["data"] == {"n": 2, "big": big, "socket": None}
    assert (await leads.expect("event"))["data"] == {"n": 3, "socket": None}
    assert runner.health.events == 4

    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM echo_payloads") >= 1
        # Bad notifications: dropped and counted; the source keeps running.
        for payload in ["not json", "[]", json.dumps({"event": "e", "data": {}}),
                        json.dumps({"channels": [CHANNEL], "data": {}}),
                        json.dumps({"table": "pg_authid", "id": 1}),
                        json.dumps({"table": "echo_payloads", "id": 999_999}),
                        json.dumps({"table": "echo_payloads", "id": "x"})]:
            await conn.execute("SELECT pg_notify('echo_test', $1)", payload)
        await conn.execute("SELECT pg_notify('echo_test', $1)",
                           json.dumps({"channels": [CHANNEL], "event": "e", "data": {"n": 4},
                                       "socket": None}))
    finally:
        await conn.close()
    assert (await leads.expect("event"))["data"] == {"n": 4}
    assert sum(server.errors.counts.values()) == 7
    assert runner.health.connected and runner.health.outages == 0


async def test_postgres_publisher_refuses_a_large_event_without_a_table(
        postgres_url: str) -> None:
    async with Broadcaster(pg_source(postgres_url, "echo_x")) as broadcaster:
        with pytest.raises(ValueError, match="table"):
            await broadcaster.publish(CHANNEL, "e", {"big": "x" * NOTIFY_LIMIT})


def outage_log(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    messages = [r.getMessage() for r in caplog.records
                if r.name in ("echo_server", "echo_server.ingest")]
    return ([m for m in messages if "unreachable" in m or "not reachable" in m],
            [m for m in messages if "is back after" in m])


async def test_postgres_restart_under_a_running_server(
        make_server: ServerFactory, node_client: ClientFactory,
        postgres_process: PostgresProcess | None, postgres_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    if postgres_process is None:
        pytest.skip("DATABASE_URL points at an external PostgreSQL, which this test cannot "
                    "restart")
    url = pg_source(postgres_url, "echo_restart", ping="0.5")
    server = await make_server({"sources": [url]}, redis=False)
    runner = await started(server, "postgres")
    client = await listener(server, node_client)
    async with Broadcaster(url) as broadcaster:
        await broadcaster.publish(CHANNEL, "e", {"n": 1})
        await client.expect("event", data={"n": 1, "socket": None})

        postgres_process.stop()
        try:
            await wait_until(lambda: not runner.health.connected, "the outage was seen")
            assert metric(server, "echo_source_up", "postgres") == 0
            assert metric(server, "echo_source_outages", "postgres") == 1
        finally:
            postgres_process.start()
        await wait_until(lambda: runner.health.connected, "re-LISTENed", timeout=15)
        await broadcaster.publish(CHANNEL, "e", {"n": 2})  # the pool replaces its connection
        await client.expect("event", data={"n": 2, "socket": None}, timeout=10)
    assert metric(server, "echo_source_up", "postgres") == 1
    assert runner.health.outages == 1
    assert numbers(client) == [1, 2]
    down, back = outage_log(caplog)
    assert len(down) == 1 and len(back) == 1, (down, back)  # however many retries it took


# --------------------------------------------------------------------------- Sentinel

class SentinelProcess:
    """``redis-server --sentinel`` (the same binary) watching one master."""

    def __init__(self, binary: str, workdir: str, master_port: int) -> None:
        self.port = free_port()
        self.config = Path(workdir) / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 60000\n")
        self.proc = subprocess.Popen([binary, str(self.config), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_master(self) -> None:
        client = aioredis.Redis(port=self.port)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if await client.execute_command("SENTINEL", "get-master-addr-by-name",
                                                    "mymaster"):
                        return
                except (ConnectionError, OSError, aioredis.ConnectionError):
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis sentinel did not start")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def command(self, *args: Any) -> Any:
        client = aioredis.Redis(port=self.port)
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def second_redis() -> Iterator[RedisProcess]:
    with private_redis() as process:
        yield process


async def test_sentinel_source_follows_the_master_it_names(
        make_server: ServerFactory, node_client: ClientFactory,
        second_redis: RedisProcess) -> None:
    """The master is asked of the Sentinels on every (re)connect: point the service at
    another Redis, drop the subscriber's connection, and events come from the new master."""
    binary = _redis_server_binary()
    assert binary is not None
    with tempfile.TemporaryDirectory() as workdir:
        first = RedisProcess(binary, free_port(), workdir)
        first.start()
        sentinel = SentinelProcess(binary, workdir, first.port)
        try:
            await sentinel.wait_master()
            url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0?prefix=app_"
            server = await make_server({"sources": [url]}, redis=False)
            runner = await started(server, "redis")
            assert runner.source.master == ("127.0.0.1", first.port)  # type: ignore[attr-defined]
            client = await listener(server, node_client)
            async with Broadcaster(url) as broadcaster:
                await broadcaster.publish(CHANNEL, "e", {"n": 1})
            await client.expect("event", data={"n": 1, "socket": None})

            await sentinel.command("SENTINEL", "REMOVE", "mymaster")
            await sentinel.command("SENTINEL", "MONITOR", "mymaster", "127.0.0.1",
                                   second_redis.port, 1)
            first.stop()  # the old master goes away; the source re-resolves
            await wait_until(lambda: runner.source.master == ("127.0.0.1", second_redis.port)  # type: ignore[attr-defined]
                             and runner.health.connected, "moved to the new master", timeout=15)
            async with Broadcaster(url) as broadcaster:
                await broadcaster.publish(CHANNEL, "e", {"n": 2})
            await client.expect("event", data={"n": 2, "socket": None})
            assert runner.health.outages == 1
        finally:
            sentinel.stop()
            first.stop()


# --------------------------------------------------------------------------- configuration

def test_source_urls_from_config_and_environment(tmp_path: Path) -> None:
    def load(options: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
        (tmp_path / "laravel-echo-server.json").write_text(json.dumps(options))
        return load_config("laravel-echo-server.json", str(tmp_path), environ=environ or {},
                           cwd=str(tmp_path))

    assert load({}).source_urls == ["redis://127.0.0.1:6379/0"]
    assert load({"databaseConfig": {"redis": {"keyPrefix": "laravel_database_", "port": 6380}}}
                ).source_urls == ["redis://127.0.0.1:6380/0?prefix=laravel_database_"]
    assert load({"subscribers": {"redis": False}}).source_urls == []
    listed = load({"sources": ["redis-stream://r/0?stream=s", "postgres://db/app"]})
    assert listed.source_urls == ["redis-stream://r/0?stream=s", "postgres://db/app"]
    assert not [w for w in listed.warnings if "unknown" in w]
    env = load({"sources": ["postgres://db/app"], "instanceId": "file"},
               {"ECHO_SOURCES": "memory://, redis://x:1/0", "ECHO_INSTANCE_ID": "env"})
    assert env.source_urls == ["memory://", "redis://x:1/0"]
    assert env.instance_id == "env"
    assert load({"instanceId": "file"}).instance_id == "file"
    with pytest.raises(Exception, match="unsupported event source"):
        load({"sources": ["kafka://k"]})


def test_display_url_hides_passwords() -> None:
    from broadcaster.sources.base import display_url

    assert display_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert display_url("redis+sentinel://u:pw@a:1,b:2/m/0?sentinel_password=x&prefix=p") == \
        "redis+sentinel://u:***@a:1,b:2/m/0?sentinel_password=***&prefix=p"
    assert display_url("postgres://app@db/app?listen=e") == "postgres://app@db/app?listen=e"

