"""What one client address, or a hundred, can make the server hold (issue 21, part A 1-3):
parked recovery sessions count against the subscription bounds and are bounded per address;
near the server-wide bound the addresses holding the most are refused first, so a newcomer
still gets in; an IPv6 client is its /64 for every per-address bound. Raw clients from
loopback addresses (127.0.0.x) against a real server; the memory figures come from a server
process of its own (RSS) or from tracemalloc around one step."""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from echo_server.core.recovery import Sessions
from echo_server.process.server import EchoServer
from echo_server.transport.guard import ConnectionGuard, HttpLimits
from tests.conftest import ServerFactory
from tests.support.http import http_client
from tests.support.instance import At, instance_process
from tests.support.raw import RawWebSocket, wait_until

# Raw clients answer no ping while a test waits: the default heartbeat, not FAST_SOCKETIO's.
SLOW_PINGS = {"pingInterval": 25000, "pingTimeout": 20000}
RECOVERY = {**SLOW_PINGS, "connectionStateRecovery": {}}


async def client(server: Any, address: str = "127.0.0.1", connect: str = "40",
                 headers: dict[str, str] | None = None) -> tuple[RawWebSocket, dict[str, Any]]:
    """An Engine.IO 4 websocket from ``address`` past its CONNECT (``40``, or
    ``40{pid, offset}`` to recover): the socket and the server's ``40`` payload."""
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket", headers=headers,
                                    local_addr=(address, 0))
    assert (await ws.recv_text()).startswith("0")
    ws.send_text(connect)
    reply = await ws.recv_text()
    assert reply.startswith("40{"), reply
    return ws, json.loads(reply[2:])


def subscribe(ws: RawWebSocket, *channels: str) -> None:
    for channel in channels:
        ws.send_text(f'42["subscribe",{{"channel":{json.dumps(channel)}}}]')


def drop(ws: RawWebSocket) -> None:
    """A network drop: the TCP connection aborted, no close frame."""
    ws.writer.transport.abort()


def sessions_of(server: EchoServer) -> Sessions:
    sessions = server.core.sessions
    assert sessions is not None
    return sessions


# -- parked sessions --------------------------------------------------------------------------
async def test_parked_subscriptions_count_against_the_bounds_and_give_way(
        make_server: ServerFactory) -> None:
    server = await make_server({"socketio": RECOVERY,
                                "limits": {"maxSubscriptionsPerAddress": 4}}, redis=False)
    counter, sessions = server.core.subscriptions, sessions_of(server)
    page, hello = await client(server)
    subscribe(page, "a", "b", "c", "d")
    await wait_until(lambda: counter.total == 4, message="subscribed")
    drop(page)
    await wait_until(lambda: len(sessions.parked) == 1, message="parked")
    assert (counter.total, counter.per_address["127.0.0.1"]) == (4, 4)

    # Recovered: counted once, as live subscriptions again.
    back, again = await client(server, connect="40" + json.dumps({"pid": hello["pid"]}))
    assert again["sid"] == hello["sid"]
    assert (counter.total, len(sessions.parked), server.core.rooms.count("d")) == (4, 0, 1)

    # Dropped again, and the page comes back without recovering (a new socket): its parked
    # session holds the address's whole bound, and gives way to the live subscriptions.
    drop(back)
    await wait_until(lambda: len(sessions.parked) == 1, message="parked again")
    fresh, _ = await client(server)
    subscribe(fresh, "a", "e")
    await wait_until(lambda: server.core.rooms.count("e") == 1, message="let in")
    assert not sessions.parked and not server.core.history.channels.keys() - {"a", "e"}
    assert (counter.total, counter.per_address["127.0.0.1"]) == (2, 2)
    assert server.errors.counts["recovery_evicted"] == 1
    assert "too_many_subscriptions" not in server.errors.counts


async def test_parked_sessions_per_address_are_bounded_oldest_first(
        make_server: ServerFactory) -> None:
    server = await make_server({"socketio": RECOVERY,
                                "limits": {"maxParkedSessionsPerAddress": 3}}, redis=False)
    sessions = sessions_of(server)
    pids = []
    for n in range(5):
        ws, hello = await client(server)
        subscribe(ws, f"page.{n}")
        await wait_until(lambda n=n: server.core.rooms.count(f"page.{n}") == 1)
        drop(ws)
        await wait_until(lambda n=n: len(sessions.parked) == min(n + 1, 3), message="parked")
        pids.append(hello["pid"])
    other, _ = await client(server, "127.0.0.2")  # another address parks its own
    drop(other)
    await wait_until(lambda: len(sessions.parked) == 4, message="the other address parked")
    assert list(sessions.by_client["127.0.0.1"]) == pids[2:]
    assert server.core.subscriptions.total == 3
    assert set(server.core.history.channels) == {"page.2", "page.3", "page.4"}


async def test_a_parked_session_costs_a_fraction_of_a_live_one(
        make_server: ServerFactory) -> None:
    """Python's own allocations (tracemalloc) for 4,000 subscriptions of one socket, live
    and once parked: what is kept is the channel names and offsets, not the socket."""
    server = await make_server({"socketio": RECOVERY,
                                "limits": {"maxSubscriptionsPerAddress": 0}}, redis=False)
    channels = [f"App.Models.Lead.{n:06d}" for n in range(4000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        page, _ = await client(server)
        subscribe(page, *channels)
        await wait_until(lambda: server.core.subscriptions.total == len(channels))
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - before
        drop(page)
        await wait_until(lambda: len(sessions_of(server).parked) == 1, message="parked")
        await page.close()
        del page
        gc.collect()
        parked = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_live, per_parked = live / len(channels), parked / len(channels)
    # The names themselves (71 bytes each here) stay: they are what recovery needs. What
    # else a live subscription costs, its parked form saves at least 60 % of.
    name = sys.getsizeof(channels[0])
    assert per_parked - name < (per_live - name) * 0.4, (per_live, per_parked)
    assert per_parked < 300, per_parked


# -- the server-wide bound from a hundred addresses ----------------------------------------------
async def test_a_hundred_addresses_cannot_lock_a_newcomer_out(make_server: ServerFactory) -> None:
    """The attack at a hundredth of its size: 100 addresses, each up to its per-address
    bound, together exactly the server's. The addresses holding the most are refused first,
    and a client from a fresh address still gets every channel it asks for."""
    server = await make_server({"socketio": SLOW_PINGS, "limits": {
        "maxSubscriptions": 5000, "maxSubscriptionsPerAddress": 50}}, redis=False)
    counter, errors = server.core.subscriptions, server.errors.counts
    attackers = [(await client(server, f"127.0.0.{n}"))[0] for n in range(1, 101)]
    for n, ws in enumerate(attackers):
        subscribe(ws, *(f"flood.{n}.{k}" for k in range(50)))
    await wait_until(lambda: counter.total + errors.get("too_many_subscriptions", 0) == 5000,
                     timeout=30, message="every subscribe answered")
    # Past 90 % of the bound, each address may hold less the more the server holds.
    assert errors.get("too_many_subscriptions", 0) > 0 and counter.total < 5000
    assert counter.per_address["127.0.0.100"] < 25

    newcomer, _ = await client(server, "127.0.0.200")
    refused = errors.get("too_many_subscriptions", 0)
    subscribe(newcomer, *(f"page.{k}" for k in range(10)))
    await wait_until(lambda: all(server.core.rooms.count(f"page.{k}") for k in range(10)),
                     message="the newcomer's channels")
    assert errors.get("too_many_subscriptions", 0) == refused
    # The flood goes on: an attacker is still refused, the server stays under its bound.
    subscribe(attackers[0], "flood.more")
    await wait_until(lambda: errors.get("too_many_subscriptions", 0) == refused + 1)
    assert counter.total < 5000


# -- IPv6: a client is its /64 -----------------------------------------------------------------
async def test_ipv6_clients_are_bounded_per_64(make_server: ServerFactory) -> None:
    """Through a trusted proxy (the test's own address), clients at three IPv6 addresses: two
    in one /64 share its bound, the third is another client."""
    server = await make_server({"socketio": SLOW_PINGS, "trustedProxies": ["127.0.0.1"],
                                "limits": {"maxSubscriptionsPerAddress": 2}}, redis=False)
    rooms, errors = server.core.rooms, server.errors.counts
    first, _ = await client(server, headers={"X-Forwarded-For": "2001:db8:1:2::1"})
    subscribe(first, "a", "b")
    await wait_until(lambda: rooms.count("b") == 1)
    same, _ = await client(server, headers={"X-Forwarded-For": "2001:db8:1:2:ffff::9"})
    subscribe(same, "c")
    assert await same.next_event() == ["subscription_error", "c", 429]
    other, _ = await client(server, headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    subscribe(other, "c", "d")
    await wait_until(lambda: rooms.count("d") == 1)
    assert errors["too_many_subscriptions"] == 1
    assert server.core.subscriptions.per_address == {"2001:db8:1:2::/64": 2,
                                                     "2001:db8:1:3::/64": 2}


def test_ipv6_connections_are_bounded_per_64() -> None:
    guard = ConnectionGuard(HttpLimits(max_connections_per_address=2))
    assert guard.admit("2001:db8::1") and guard.admit("2001:db8::2:3")
    assert not guard.admit("2001:db8::ffff")  # the same /64
    assert guard.admit("2001:db8:0:1::1")  # the next one
    assert guard.admit("::ffff:10.0.0.1") and guard.admit("10.0.0.1")  # IPv4 either way
    assert not guard.admit("10.0.0.1")
    guard.release("2001:db8::2:3")
    assert guard.admit("2001:db8::abcd")
    assert guard.per_address == {"2001:db8::/64": 2, "2001:db8:0:1::/64": 1, "10.0.0.1": 2}



async def test_a_parked_session_gives_everything_back_after_the_window(
        make_server: ServerFactory) -> None:
    server = await make_server({"socketio": {**SLOW_PINGS, "connectionStateRecovery": {
        "maxDisconnectionDuration": 300}}}, redis=False)
    sessions, history = sessions_of(server), server.core.history
    page, _ = await client(server)
    subscribe(page, *(f"page.{n}" for n in range(100)))
    await wait_until(lambda: server.core.subscriptions.total == 100, message="subscribed")
    drop(page)
    await wait_until(lambda: len(sessions.parked) == 1, message="parked")
    await wait_until(lambda: not sessions.parked, message="the window over")
    assert server.core.subscriptions.total == 0 and not server.core.subscriptions.per_address
    assert not history.channels and not sessions.by_client and not sessions.live


# -- occupancy under churn -----------------------------------------------------------------------
async def test_churn_keeps_the_occupancy_backlog_to_the_channels_held(
        make_server: ServerFactory, redis: aioredis.Redis) -> None:
    """Subscribe/unsubscribe churn on channels of their own, from 20 sockets: what waits to be
    counted in Redis is at most one change per channel (a channel occupied and left again
    before its turn is nothing to write), and the counts end right."""
    prefix = f"churn{secrets.token_hex(3)}_"
    server = await make_server({"database": "redis", "socketio": SLOW_PINGS,
                                "databaseConfig": {"redis": {"keyPrefix": prefix}}})
    occupancy = server.occupancy
    assert occupancy.pending is not None  # counted in Redis
    sockets = [(await client(server, f"127.0.0.{n}"))[0] for n in range(1, 21)]
    most = 0
    sampling = True

    async def sample() -> None:
        nonlocal most
        while sampling:
            most = max(most, len(occupancy.pending or ()))
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample())
    # Redis takes no writes (nor scripts) for a while: the writer waits, the churn goes on.
    await redis.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    for round_ in range(40):
        for action in ("subscribe", "unsubscribe"):
            for n, ws in enumerate(sockets):
                ws.send_text(f'42["{action}",{{"channel":"churn.{n}.{round_}"}}]')
            await wait_until(lambda n=round_, a=action: (f"churn.0.{n}" in server.core.rooms)
                             == (a == "subscribe"), message=action)
    subscribe(sockets[0], "stays")
    await wait_until(lambda: server.core.rooms.count("stays") == 1, timeout=20,
                     message="the churn processed")
    await wait_until(lambda: not occupancy.pending, message="the backlog written")
    sampling = False
    await sampler
    # One entry per channel held or just left, never one per change (1,600 of them).
    assert len(sockets) <= most <= 2 * len(sockets), most
    assert occupancy.counts_key.startswith("{" + prefix)
    assert await redis.hgetall(occupancy.counts_key) == {b"stays": b"1"}
    for ws in sockets:
        await ws.close()
    await wait_until(lambda: not len(server.core.rooms), message="everyone gone")
    await wait_until(lambda: not occupancy.pending)
    assert await redis.hgetall(occupancy.counts_key) == {}
    assert not await redis.exists(occupancy.instance_key(occupancy.instance_id))


# -- memory over waves, in a server process of its own ---------------------------------------
WAVES = 2


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def gauge(http: aiohttp.ClientSession, at: At, name: str) -> float:
    async with http.get(f"http://127.0.0.1:{at.port}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def gauge_is(http: aiohttp.ClientSession, at: At, name: str, value: float,
                   timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await gauge(http, at, name)) != value:
        assert asyncio.get_running_loop().time() < deadline, (name, seen, value)
        await asyncio.sleep(0.05)


async def test_waves_of_parked_sessions_do_not_grow_memory(
        tmp_path: Path, redis_url: str) -> None:
    """The park attack in waves from one address, within one recovery window: 20 sockets
    subscribe to 2,000 channels of their own each, and drop. The second wave's subscriptions
    end the first wave's parked sessions (the address's bound counts them), so RSS after the
    second wave is that after the first, within 10 %."""
    options = {"database": "redis", "devMode": False,
               "socketio": {**RECOVERY, "maxChannelsPerSocket": 2000},
               "limits": {"maxSubscriptionsPerAddress": 20_000}}
    async with instance_process(tmp_path, redis_url, options) as (proc, at), \
            http_client() as http:
        after = []
        for wave in range(WAVES):
            sockets = [(await client(at))[0] for _ in range(10)]
            for n, ws in enumerate(sockets):
                subscribe(ws, *(f"wave.{wave}.{n}.{k}" for k in range(2000)))
            await gauge_is(http, at, "echo_subscriptions", 20_000)
            for ws in sockets:
                drop(ws)
            await gauge_is(http, at, "echo_parked_subscriptions", 20_000)
            await gauge_is(http, at, "echo_parked_sessions", 10)
            after.append(rss_mb(proc.pid))
        print(f"RSS MB after each wave: {after}")
        assert after[1] < after[0] * 1.10, after


async def test_waves_of_churn_do_not_grow_memory(tmp_path: Path, redis_url: str,
                                                 redis: aioredis.Redis) -> None:
    """The churn attack in waves (recovery off, occupancy counted in Redis): 20 sockets
    subscribe to and leave 4,000 channels of their own each, 160,000 occupancy changes a
    wave, faster than Redis takes them one by one. RSS after the second wave is that after
    the first, within 10 %, and the counts in Redis end right soon after."""
    prefix = f"churn{secrets.token_hex(3)}_"
    options = {"database": "redis", "devMode": False, "socketio": SLOW_PINGS,
               "databaseConfig": {"redis": {"keyPrefix": prefix}}}
    async with instance_process(tmp_path, redis_url, options) as (proc, at), \
            http_client() as http:
        sockets = [(await client(at, f"127.0.0.{n}"))[0] for n in range(1, 21)]
        after = []
        for wave in range(WAVES):
            for k in range(4000):
                for n, ws in enumerate(sockets):
                    channel = json.dumps(f"churn.{wave}.{n}.{k}")
                    ws.send_text(f'42["subscribe",{{"channel":{channel}}}]')
                    ws.send_text(f'42["unsubscribe",{{"channel":{channel}}}]')
                if k % 100 == 0:
                    await asyncio.sleep(0)
            subscribe(sockets[0], f"wave.{wave}")
            await gauge_is(http, at, "echo_subscriptions", wave + 1)
            after.append(rss_mb(proc.pid))
        print(f"RSS MB after each wave: {after}")
        assert after[1] < after[0] * 1.10, after
        counts_key = "{" + prefix + "echo}:occupancy"
        deadline = asyncio.get_running_loop().time() + 5
        while set(await redis.hkeys(counts_key)) != {b"wave.0", b"wave.1"}:
            assert asyncio.get_running_loop().time() < deadline, "occupancy not written"
            await asyncio.sleep(0.05)


async def test_a_stopping_server_parks_every_session_whatever_the_bound(
        make_server: ServerFactory) -> None:
    """At a stop, every session is parked for another instance to take over (its record
    stays in Redis): the per-address bound ends none of them first."""
    server = await make_server({"socketio": RECOVERY,
                                "limits": {"maxParkedSessionsPerAddress": 1}}, redis=False)
    pages = [(await client(server))[0] for _ in range(3)]
    for n, ws in enumerate(pages):
        subscribe(ws, f"page.{n}")
    await wait_until(lambda: server.core.subscriptions.total == 3, message="subscribed")
    await server.stop(timeout=2)
    assert "recovery_evicted" not in server.errors.counts
