"""The three real client stacks against the server, with events published to
Redis exactly as Laravel's RedisBroadcaster does.

Every stack is run over websocket, over polling, and over polling upgraded to
websocket (socket.io-client's default ``polling,websocket``).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from echo_server.process.server import EchoServer
from echo_server.transport.engine import EngineServer
from tests.conftest import ServerFactory, laravel_message, requires_node, server_url
from tests.support.node_client import NodeEchoClient
from tests.support.seed_events import capacity_updated, lead_assigned
from tests.support.waits import (
    ClientFactory,
    member_ids,
    server_socket,
    wait_member,
    wait_not_member,
    wait_until,
)

pytestmark = requires_node

STACKS = ["echo1-sio2", "echo2-sio2", "echo2-sio4"]
TRANSPORTS = ["websocket", "polling", "polling,websocket"]
PREFIX = "laravel_database_"
CHANNEL = "leads-management"
MARKER_CHANNEL = "marker"

matrix = pytest.mark.parametrize(
    ("stack", "transport"), [(s, t) for s in STACKS for t in TRANSPORTS])


async def _connect(server: EchoServer, node_client: ClientFactory, stack: str,
                   transport: str) -> tuple[NodeEchoClient, str]:
    """A tab that is connected (and upgraded, when it may upgrade); its Echo.socketId()."""
    client = await node_client(stack, server_url(server), transports=transport)
    connected = await client.expect("connected")
    socket_id = await client.socket_id()
    assert socket_id and socket_id == connected["socketId"]
    if transport == "polling,websocket":
        await wait_until(
            lambda: server_socket(server, socket_id).session.transport_name == "websocket",
            f"{socket_id} upgraded to websocket")
    return client, socket_id


async def _publish(redis: aioredis.Redis, channel: str, event: str, data: dict[str, Any],
                   socket_id: str | None = None) -> None:
    await redis.publish(PREFIX + channel, laravel_message(event, data, socket_id))


@matrix
async def test_seed_events_to_others_and_leave(make_server: ServerFactory,
                                               node_client: ClientFactory,
                                               redis: aioredis.Redis, stack: str,
                                               transport: str) -> None:
    server = await make_server({"databaseConfig": {"redis": {"keyPrefix": PREFIX}}})
    a, a_id = await _connect(server, node_client, stack, transport)
    b, b_id = await _connect(server, node_client, stack, transport)
    listen = ["LeadAssigned", ".lead.assigned", ".admin.capacity.updated"]
    for client in (a, b):
        await client.command({"cmd": "channel", "channel": CHANNEL, "listen": listen})
    await b.command({"cmd": "channel", "channel": MARKER_CHANNEL, "listen": [".marker"]})
    await wait_member(server, CHANNEL, a_id)
    await wait_member(server, CHANNEL, b_id)
    await wait_member(server, MARKER_CHANNEL, b_id)

    # The seed's two events, byte-exact on both tabs (``socket`` rides along in data).
    lead, capacity = lead_assigned(), capacity_updated()
    await _publish(redis, CHANNEL, "lead.assigned", lead)
    await _publish(redis, CHANNEL, "admin.capacity.updated", capacity)
    for client in (a, b):
        got = await client.expect("event", event=".lead.assigned")
        assert got == {"type": "event", "channel": CHANNEL, "event": ".lead.assigned",
                       "data": {**lead, "socket": None}}
        got = await client.expect("event", event=".admin.capacity.updated")
        assert got["data"] == {**capacity, "socket": None}

    # toOthers: Laravel sends back A's X-Socket-ID (for socket.io-client 4, the
    # namespace sid), and .listen('LeadAssigned') matches App\Events\LeadAssigned.
    other = lead_assigned(lead_id=43)
    await _publish(redis, CHANNEL, "App\\Events\\LeadAssigned", other, socket_id=a_id)
    await _publish(redis, CHANNEL, "lead.assigned", {"marker": 1})
    got = await b.expect("event", event="LeadAssigned")
    assert got["data"] == {**other, "socket": a_id}
    for client in (a, b):
        await client.expect("event", event=".lead.assigned", data={"marker": 1, "socket": None})
    await a.expect_none("event", event="LeadAssigned", within=0.05)

    # Echo.leave stops delivery to B, and only to B.
    await b.command({"cmd": "leave", "channel": CHANNEL})
    await wait_not_member(server, CHANNEL, b_id)
    assert member_ids(server, CHANNEL) == {a_id}
    await _publish(redis, CHANNEL, "lead.assigned", {"after_leave": 1})
    await _publish(redis, MARKER_CHANNEL, "marker", {"done": 1})
    await a.expect("event", event=".lead.assigned", data={"after_leave": 1, "socket": None})
    await b.expect("event", event=".marker")
    await b.expect_none("event", event=".lead.assigned", within=0.05)
    for client in (a, b):
        assert not client.backlog("error"), client.backlog("error")
        assert not client.backlog("disconnected")


@matrix
async def test_resubscribes_after_client_and_server_drops(make_server: ServerFactory,
                                                          node_client: ClientFactory,
                                                          redis: aioredis.Redis, stack: str,
                                                          transport: str) -> None:
    server = await make_server({"databaseConfig": {"redis": {"keyPrefix": PREFIX}}})
    client, socket_id = await _connect(server, node_client, stack, transport)
    await client.command({"cmd": "channel", "channel": CHANNEL, "listen": [".lead.assigned"]})
    await wait_member(server, CHANNEL, socket_id)
    await _publish(redis, CHANNEL, "lead.assigned", {"n": 1})
    await client.expect("event", data={"n": 1, "socket": None})

    async def resubscribed(old_id: str) -> str:
        await client.expect("disconnected")
        connected = await client.expect("connected")
        new_id = connected["socketId"]
        assert new_id and new_id != old_id
        # Echo re-sends subscribe on its own; the dead socket must be gone from the room.
        await wait_member(server, CHANNEL, new_id)
        await wait_until(lambda: member_ids(server, CHANNEL) == {new_id},
                         f"only {new_id} in {CHANNEL}")
        return new_id

    # A network drop on the client side: the Manager reconnects, Echo resubscribes.
    await client.command({"cmd": "reconnect", "mode": "drop"})
    socket_id = await resubscribed(socket_id)
    await _publish(redis, CHANNEL, "lead.assigned", {"n": 2})
    await client.expect("event", data={"n": 2, "socket": None})

    # The server drops every session (a deploy, a load balancer reset).
    server.part(EngineServer).close_all()
    socket_id = await resubscribed(socket_id)
    await _publish(redis, CHANNEL, "lead.assigned", {"n": 3})
    await client.expect("event", data={"n": 3, "socket": None})
    assert [e["data"]["n"] for e in client.history if e.get("type") == "event"] == [1, 2, 3]
    assert not client.backlog("error"), client.backlog("error")
