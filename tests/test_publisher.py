"""The publisher services call (``broadcaster.Broadcaster``): byte for byte what Laravel's
RedisBroadcaster publishes, the sync wrapper, the seed's two events built by the typed helpers
and received by real Echo clients field by field, and ``echo-server publish``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from broadcaster import Broadcaster, SyncBroadcaster
from broadcaster.events import (
    admin_capacity_updated,
    capacity,
    full_name,
    iso_timestamp,
    lead_assigned,
    php_round,
)
from broadcaster.phpjson import php_float, php_json_encode
from tests.conftest import ROOT, AuthBackend, ServerFactory, requires_node, server_url
from tests.support.seed_events import admin
from tests.support.waits import ClientFactory, wait_member

PREFIX = "laravel_database_"
SOCKET = "1234.5678"
AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PHP_SCRIPT = Path(__file__).parent / "support" / "laravel_broadcast.php"

# What PHP 8.2 prints for tests/support/laravel_broadcast.php, one line per event: Laravel's
# json_encode without flags escapes "/" and every non-ASCII character (lowercase \u, surrogate
# pairs for the emoji) and writes round(30.0, 1) as 30. RedisBroadcaster publishes these bytes.
GOLDEN_SAMPLE = (
    rb'''{"event":"lead.assigned","data":{"lead":{"id":42,"name":"Zeynep Kaya","url":'''
    rb'''"https:\/\/crm.example.com\/leads\/42"},"message":"Lead Ay\u015fe Y\u0131lmaz adl\u0131 '''
    rb'''admin'e atand\u0131 \ud83c\udfaf","percentage":30,"ratio":0.30000000000000004,'''
    rb'''"tags":[],"active":true,"note":null,"socket":"1234.5678"},"socket":"1234.5678"}''')
GOLDEN_LEAD_ASSIGNED = (
    rb'''{"event":"lead.assigned","data":{"lead":{"id":42,"name":"Zeynep Kaya","phone":'''
    rb'''"+90 555 000 0000","lead_status":{"id":1,"name":"Yeni"},"assigned_admin":{"id":5,'''
    rb'''"name":"Ay\u015fe Y\u0131lmaz","email":"admin5@example.com","leads_assigned_count":12,'''
    rb'''"max_leads_per_day":40}},"assignment":{"new_admin":{"id":5,"name":"Ay\u015fe '''
    rb'''Y\u0131lmaz","email":"admin5@example.com","leads_assigned_count":12,'''
    rb'''"max_leads_per_day":40},"old_admin":{"id":3,"name":"Mehmet Demir","email":'''
    rb'''"admin3@example.com","leads_assigned_count":12,"max_leads_per_day":40},"assigned_by":'''
    rb'''{"id":1,"name":"S\u00fcper Admin","email":"admin1@example.com","leads_assigned_count"'''
    rb''':12,"max_leads_per_day":40},"timestamp":"2026-11-25T10:00:00.000000Z","type":'''
    rb'''"reassignment"},"notification":{"title":"Yeni lead atand\u0131: Zeynep Kaya","message":'''
    rb'''"Lead Ay\u015fe Y\u0131lmaz adl\u0131 admin'e atand\u0131","type":"assignment",'''
    rb'''"priority":"normal"},"socket":null},"socket":null}''')
GOLDEN_CAPACITY = (
    rb'''{"event":"admin.capacity.updated","data":{"admin":{"id":5,"name":"Ay\u015fe '''
    rb'''Y\u0131lmaz","email":"admin5@example.com","leads_assigned_count":12,'''
    rb'''"max_leads_per_day":40},"capacity_change":1,"new_capacity":{"current":12,"max":40,'''
    rb'''"available":28,"percentage":30},"timestamp":"2026-11-25T10:00:00.000000Z",'''
    rb'''"socket":"1234.5678"},"socket":"1234.5678"}''')

SAMPLE: dict[str, Any] = {
    "lead": {"id": 42, "name": "Zeynep Kaya", "url": "https://crm.example.com/leads/42"},
    "message": "Lead Ayşe Yılmaz adlı admin'e atandı 🎯",
    "percentage": round(12 / 40 * 100, 1),
    "ratio": 0.1 + 0.2,
    "tags": [],
    "active": True,
    "note": None,
}


def seed_lead(new: dict[str, Any]) -> dict[str, Any]:
    return {"id": 42, "name": "Zeynep Kaya", "phone": "+90 555 000 0000",
            "lead_status": {"id": 1, "name": "Yeni"}, "assigned_admin": new}


NEW, OLD, BY = admin(5, "Ayşe Yılmaz"), admin(3, "Mehmet Demir"), admin(1, "Süper Admin")

Take = Callable[..., Awaitable[list[tuple[bytes, bytes]]]]


@contextlib.asynccontextmanager
async def raw_subscriber(redis_url: str, pattern: str = PREFIX + "*") -> AsyncIterator[Take]:
    """What Redis hands any subscriber, byte for byte (PSUBSCRIBE confirmed before yielding)."""
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(pattern)
    confirmation = await pubsub.get_message(timeout=5)
    assert confirmation and confirmation["type"] == "psubscribe"

    async def take(count: int, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
        got: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(timeout):
            while len(got) < count:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    got.append((message["channel"], message["data"]))
        return got

    try:
        yield take
    finally:
        await pubsub.aclose()
        await client.aclose()


# --------------------------------------------------------------------------- golden bytes

def test_golden_bytes_are_what_php_writes() -> None:
    """Guards the constants above: re-run the PHP program when php is installed."""
    php = shutil.which("php")
    if php is None:
        pytest.skip("php is not installed (apt-get install php-cli) to re-derive the golden bytes")
    lines = subprocess.run([php, str(PHP_SCRIPT)], check=True, capture_output=True).stdout
    assert lines.splitlines() == [GOLDEN_SAMPLE, GOLDEN_LEAD_ASSIGNED, GOLDEN_CAPACITY]


async def test_publish_writes_exactly_what_laravel_publishes(redis_url: str) -> None:
    async with raw_subscriber(redis_url) as take, \
            Broadcaster(f"{redis_url}?prefix={PREFIX}") as broadcaster:
        await broadcaster.publish(["leads-management", "private-admin-dashboard.5"],
                                  "lead.assigned", SAMPLE, socket=SOCKET)
        assert await take(2) == [
            (b"laravel_database_leads-management", GOLDEN_SAMPLE),
            (b"laravel_database_private-admin-dashboard.5", GOLDEN_SAMPLE),
        ]


async def test_typed_helpers_write_exactly_what_the_seed_events_publish(redis_url: str) -> None:
    async with raw_subscriber(redis_url) as take, \
            Broadcaster(redis_url, key_prefix=PREFIX) as broadcaster:
        await broadcaster.broadcast(lead_assigned(seed_lead(NEW), NEW, OLD, BY, at=AT))
        assert await take(3) == [
            (b"laravel_database_leads-management", GOLDEN_LEAD_ASSIGNED),
            (b"laravel_database_private-admin-dashboard.5", GOLDEN_LEAD_ASSIGNED),
            (b"laravel_database_private-admin-dashboard.3", GOLDEN_LEAD_ASSIGNED),
        ]
        await broadcaster.broadcast(admin_capacity_updated(NEW, 1, at=AT), socket=SOCKET)
        assert await take(2) == [
            (b"laravel_database_leads-management", GOLDEN_CAPACITY),
            (b"laravel_database_admin-capacity-updates", GOLDEN_CAPACITY),
        ]


async def test_sync_broadcaster_publishes_the_same_bytes(redis_url: str) -> None:
    def from_sync_code() -> None:
        with SyncBroadcaster(redis_url, key_prefix=PREFIX, timeout=5) as broadcaster:
            broadcaster.publish("leads-management", "lead.assigned", SAMPLE, socket=SOCKET)
            broadcaster.broadcast(admin_capacity_updated(NEW, 1, at=AT), socket=SOCKET)
        with pytest.raises(RuntimeError, match="closed"):
            broadcaster.publish("leads-management", "e", {})

    async with raw_subscriber(redis_url) as take:
        await asyncio.to_thread(from_sync_code)
        assert await take(3) == [
            (b"laravel_database_leads-management", GOLDEN_SAMPLE),
            (b"laravel_database_leads-management", GOLDEN_CAPACITY),
            (b"laravel_database_admin-capacity-updates", GOLDEN_CAPACITY),
        ]


def test_php_float_notation() -> None:
    cases = {30.0: "30", -0.0: "-0", 0.1 + 0.2: "0.30000000000000004", 1e15: "1000000000000000",
             1e16: "10000000000000000", 1e17: "1.0e+17", 1.2345678901234568e17:
             "1.2345678901234568e+17", 0.0001: "0.0001", 0.00001: "1.0e-5", 1.5e-7: "1.5e-7",
             2.5e20: "2.5e+20", 123456.789: "123456.789", 33.3: "33.3"}
    assert {value: php_float(value) for value in cases} == cases
    assert php_json_encode({"s": "a/b \x7f \x01 \u2028 \"q\" \\"}) == \
        '{"s":"a\\/b \x7f \\u0001 \\u2028 \\"q\\" \\\\"}'
    assert php_json_encode({1: [], "t": (1, 2)}) == '{"1":[],"t":[1,2]}'
    with pytest.raises(ValueError):
        php_float(float("nan"))


async def test_bad_calls_are_refused_before_anything_is_sent(redis_url: str) -> None:
    async with Broadcaster(redis_url) as broadcaster:
        with pytest.raises(TypeError, match="mapping"):
            await broadcaster.publish("leads", "e", ["not", "an", "array"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="channel"):
            await broadcaster.publish([], "e", {})
        with pytest.raises(ValueError, match="event"):
            await broadcaster.publish("leads", "", {})
    with pytest.raises(ValueError, match="unsupported"):
        Broadcaster("kafka://localhost")


PUBLISHER_URLS = ["redis://127.0.0.1:6379/0", "redis+sentinel://127.0.0.1:26379/mymaster",
                  "redis+cluster://127.0.0.1:7000", "redis-stream://127.0.0.1:6379/0",
                  "postgres://echo@127.0.0.1/echo", "memory://"]


@pytest.mark.parametrize("url", PUBLISHER_URLS)
def test_unknown_options_are_refused_by_name(url: str) -> None:
    """``prefix=`` (the URL's spelling, not the keyword's) was taken and ignored: events went
    out without the prefix, to channels no Echo client listens on."""
    def sync_threads() -> int:
        return sum(thread.name == "SyncBroadcaster" for thread in threading.enumerate())

    with pytest.raises(TypeError, match="'prefix'"):
        Broadcaster(url, prefix=PREFIX)
    threads = sync_threads()
    with pytest.raises(TypeError, match="'prefix', 'timeout_ms'"):
        SyncBroadcaster(url, timeout_ms=5, prefix=PREFIX)
    assert sync_threads() == threads  # refused before its thread started


@pytest.mark.parametrize("url", PUBLISHER_URLS)
async def test_the_documented_options_are_taken_by_every_backend(url: str) -> None:
    # key_prefix means something to Redis only; the others take it so that the same call
    # works whatever the URL (echo-server publish passes the config's keyPrefix to any).
    async with Broadcaster(url, key_prefix=PREFIX, connect_timeout=1.5):
        pass


# --------------------------------------------------------------------------- typed helpers

def test_lead_assigned_variants_follow_broadcast_with() -> None:
    initial = lead_assigned(seed_lead(NEW), NEW, None, BY, at=AT)
    assert initial.channels == ("leads-management", "private-admin-dashboard.5",
                                "private-admin-dashboard.unassigned")
    assert initial.payload["assignment"]["type"] == "initial_assignment"
    assert initial.payload["assignment"]["old_admin"] is None

    removed = lead_assigned(seed_lead(None), None, OLD, BY, at=AT)  # type: ignore[arg-type]
    assert removed.channels == ("leads-management", "private-admin-dashboard.unassigned",
                                "private-admin-dashboard.3")
    assert removed.payload["notification"] == {
        "title": "Lead ataması kaldırıldı: Zeynep Kaya", "message": "Lead'in ataması kaldırıldı",
        "type": "assignment", "priority": "normal"}
    assert removed.payload["assignment"]["type"] == "reassignment"

    named = lead_assigned({"id": 1, "name": "Ali"}, {"id": 7, "first_name": "Deniz",
                                                     "last_name": "Ak"}, None, BY)
    assert named.payload["notification"]["message"] == "Lead Deniz Ak adlı admin'e atandı"
    assert full_name({"full_name": "Dr. Deniz Ak", "name": "deniz"}) == "Dr. Deniz Ak"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",
                        named.payload["assignment"]["timestamp"])


def test_capacity_follows_broadcast_with() -> None:
    assert capacity(12, 40) == {"current": 12, "max": 40, "available": 28, "percentage": 30.0}
    assert capacity(1, 3)["percentage"] == 33.3
    assert capacity(2, 3)["percentage"] == 66.7
    assert capacity(45, 40) == {"current": 45, "max": 40, "available": 0, "percentage": 112.5}
    zero = capacity(3, 0)
    assert zero == {"current": 3, "max": 0, "available": 0, "percentage": 0}
    assert type(zero["percentage"]) is int  # PHP's `: 0` branch, an int
    assert php_round(12.25, 1) == 12.3 and php_round(-12.25, 1) == -12.3  # PHP rounds half up
    event = admin_capacity_updated(NEW, -1, current=3, maximum=8, at=AT)
    assert event.channels == ("leads-management", "admin-capacity-updates")
    assert event.payload == {"admin": NEW, "capacity_change": -1,
                             "new_capacity": {"current": 3, "max": 8, "available": 5,
                                              "percentage": 37.5},
                             "timestamp": "2026-11-25T10:00:00.000000Z"}
    assert iso_timestamp(datetime(2026, 1, 2, 3, 4, 5, 678)) == "2026-01-02T03:04:05.000678Z"


@requires_node
@pytest.mark.parametrize("stack", ["echo1-sio2", "echo2-sio4"])
async def test_seed_events_reach_echo_listeners_field_by_field(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        redis_url: str, stack: str) -> None:
    """What the seed's WebSocketService does: ``.listen('.lead.assigned')`` and
    ``.listen('.admin.capacity.updated')`` on leads-management, ``.lead.assigned`` on the
    private admin dashboard; the helpers' events arrive with broadcastWith()'s shapes."""
    auth_backend.allow_private("private-admin-dashboard.5")
    server = await make_server({"authHost": auth_backend.url,
                                "databaseConfig": {"redis": {"keyPrefix": PREFIX}}})
    board = await node_client(stack, server_url(server), transports="websocket")
    board_id = (await board.expect("connected"))["socketId"]
    await board.command({"cmd": "channel", "channel": "leads-management",
                         "listen": [".lead.assigned", ".admin.capacity.updated"]})
    admin5 = await node_client(stack, server_url(server), transports="websocket")
    admin5_id = (await admin5.expect("connected"))["socketId"]
    await admin5.command({"cmd": "private", "channel": "admin-dashboard.5",
                          "listen": [".lead.assigned"]})
    await wait_member(server, "leads-management", board_id)
    await wait_member(server, "private-admin-dashboard.5", admin5_id)

    async with Broadcaster(redis_url, key_prefix=PREFIX) as broadcaster:
        await broadcaster.broadcast(lead_assigned(seed_lead(NEW), NEW, OLD, BY, at=AT))
        await broadcaster.broadcast(admin_capacity_updated(NEW, 1, at=AT))

    for client, channel in ((board, "leads-management"), (admin5, "private-admin-dashboard.5")):
        got = await client.expect("event", event=".lead.assigned")
        assert got["channel"] == channel
        data = got["data"]
        assert list(data) == ["lead", "assignment", "notification", "socket"]
        assert data["lead"] == seed_lead(NEW)
        assert data["lead"]["assigned_admin"]["id"] == 5
        assignment = data["assignment"]
        assert list(assignment) == ["new_admin", "old_admin", "assigned_by", "timestamp", "type"]
        assert assignment["new_admin"] == NEW
        assert assignment["old_admin"] == OLD
        assert assignment["assigned_by"] == BY
        assert assignment["timestamp"] == "2026-11-25T10:00:00.000000Z"
        assert assignment["type"] == "reassignment"
        notification = data["notification"]
        assert notification["title"] == "Yeni lead atandı: Zeynep Kaya"
        assert notification["message"] == "Lead Ayşe Yılmaz adlı admin'e atandı"
        assert notification["type"] == "assignment"
        assert notification["priority"] == "normal"
        assert data["socket"] is None

    got = await board.expect("event", event=".admin.capacity.updated")
    data = got["data"]
    assert list(data) == ["admin", "capacity_change", "new_capacity", "timestamp", "socket"]
    assert data["admin"] == NEW
    assert data["capacity_change"] == 1
    assert data["new_capacity"] == {"current": 12, "max": 40, "available": 28, "percentage": 30}
    assert data["timestamp"] == "2026-11-25T10:00:00.000000Z"
    assert data["socket"] is None
    await admin5.expect_none("event", within=0.3)  # not on the capacity event's channels


@requires_node
async def test_memory_publisher_reaches_servers_in_this_process(
        make_server: ServerFactory, node_client: ClientFactory) -> None:
    server = await make_server(redis=False)
    client = await node_client("echo2-sio4", server_url(server), transports="websocket")
    socket_id = (await client.expect("connected"))["socketId"]
    await client.command({"cmd": "channel", "channel": "leads-management",
                          "listen": [".lead.assigned"]})
    await wait_member(server, "leads-management", socket_id)
    async with Broadcaster("memory://") as broadcaster:
        await broadcaster.publish("leads-management", "lead.assigned", {"lead": {"id": 1}})
        await broadcaster.publish("leads-management", "lead.assigned", {"lead": {"id": 2}},
                                  socket=socket_id)  # toOthers: not to this client
        await broadcaster.publish("leads-management", "lead.assigned", {"lead": {"id": 3}})
    assert (await client.expect("event"))["data"] == {"lead": {"id": 1}, "socket": None}
    assert (await client.expect("event"))["data"] == {"lead": {"id": 3}, "socket": None}


@requires_node
async def test_sync_memory_publisher_from_a_worker_thread(
        make_server: ServerFactory, node_client: ClientFactory) -> None:
    """Synchronous code in another thread (a worker, a Django view) publishing to a server
    embedded in this process: the events reach its clients, in order."""
    server = await make_server(redis=False)
    client = await node_client("echo1-sio2", server_url(server), transports="websocket")
    socket_id = (await client.expect("connected"))["socketId"]
    await client.command({"cmd": "channel", "channel": "leads-management",
                          "listen": [".lead.assigned"]})
    await wait_member(server, "leads-management", socket_id)
    # Debug mode makes the loop refuse calls from another thread (which would otherwise
    # only show as events delivered late, at the loop's next wakeup).
    asyncio.get_running_loop().set_debug(True)

    def from_a_thread() -> None:
        with SyncBroadcaster("memory://", timeout=5) as broadcaster:
            for n in range(3):
                broadcaster.publish("leads-management", "lead.assigned", {"n": n})

    await asyncio.to_thread(from_a_thread)
    for n in range(3):
        assert (await client.expect("event", timeout=3))["data"] == {"n": n, "socket": None}


# --------------------------------------------------------------------------- CLI

async def _cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "echo_server", *args, cwd=str(cwd),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_publish_uses_the_configs_redis_and_prefix(redis_url: str,
                                                              tmp_path: Path) -> None:
    from tests.conftest import redis_config

    config = redis_config(redis_url, keyPrefix=PREFIX)
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps(config))
    async with raw_subscriber(redis_url) as take:
        code, out, err = await _cli("publish", "leads-management", "lead.assigned",
                                    '{"lead": {"id": 42, "url": "https://x/42"}}',
                                    "--socket", SOCKET, "--dir", str(tmp_path), cwd=tmp_path)
        assert code == 0, err
        assert "Published lead.assigned on leads-management" in out
        assert await take(1) == [(
            b"laravel_database_leads-management",
            b'{"event":"lead.assigned","data":{"lead":{"id":42,"url":"https:\\/\\/x\\/42"},'
            b'"socket":"1234.5678"},"socket":"1234.5678"}')]

        code, out, err = await _cli("publish", "orders", "e", "--source",
                                    f"{redis_url}?prefix={PREFIX}", cwd=tmp_path)
        assert code == 0, err
        assert await take(1) == [(b"laravel_database_orders",
                                  b'{"event":"e","data":{"socket":null},"socket":null}')]

    code, _, err = await _cli("publish", "orders", "e", "[1]", "--source", redis_url,
                              cwd=tmp_path)
    assert code == 1 and "JSON object" in err
    code, _, err = await _cli("publish", "orders", "e", "{", "--source", redis_url,
                              cwd=tmp_path)
    assert code == 1 and "not JSON" in err
    code, _, err = await _cli("publish", "orders", "e", "--source",
                              "redis://127.0.0.1:1/0", cwd=tmp_path)
    assert code == 1 and "failed" in err
