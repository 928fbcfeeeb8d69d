"""What one client address, or a hundred, can make the server hold (issue 21, part A 1-3):
parked recovery sessions count against the subscription bounds and are bounded per address;
near the server-wide bound the addresses holding the most are refused first, so a newcomer
still gets in; an IPv6 client is its /64 for every per-address bound. Raw clients from
loopback addresses (127.0.0.x) against a real server; the memory figures come from a server
process of its own (RSS) or from tracemalloc around one step."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

from echo_server.core.recovery import Sessions
from echo_server.server import EchoServer
from echo_server.transport.guard import ConnectionGuard, HttpLimits
from tests.conftest import ServerFactory
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
    # The names themselves (about 70 bytes each here) stay: they are what recovery needs.
    assert per_parked < per_live / 2.5, (per_live, per_parked)
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

