"""The three real client stacks against the server, with events published to
Redis exactly as Laravel's RedisBroadcaster does."""

from __future__ import annotations

import pytest

from tests.conftest import laravel_message, requires_node, server_url
from tests.support.seed_events import capacity_updated, lead_assigned

pytestmark = requires_node

STACKS = ["echo1-sio2", "echo2-sio2", "echo2-sio4"]
TRANSPORTS = ["websocket", "polling"]
PREFIX = "laravel_database_"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stack", STACKS)
async def test_public_channel_receives_laravel_broadcast(make_server, node_client, redis, stack,
                                                         transport):
    server = await make_server(
        {"databaseConfig": {"redis": {"keyPrefix": PREFIX}}})
    client = await node_client(stack, server_url(server), transports=transport)
    connected = await client.expect("connected")
    await client.command({"cmd": "channel", "channel": "leads-management",
                          "listen": [".lead.assigned", ".admin.capacity.updated"]})
    await _wait_subscribed(server, "leads-management", 1)

    payload = lead_assigned()
    await redis.publish(PREFIX + "leads-management", laravel_message("lead.assigned", payload))
    got = await client.expect("event", event=".lead.assigned")
    assert got["channel"] == "leads-management"
    assert got["data"] == {**payload, "socket": None}

    capacity = capacity_updated()
    await redis.publish(PREFIX + "leads-management",
                        laravel_message("admin.capacity.updated", capacity))
    got = await client.expect("event", event=".admin.capacity.updated")
    assert got["data"]["new_capacity"] == capacity["new_capacity"]
    assert connected["socketId"]


async def _wait_subscribed(server, channel: str, count: int) -> None:
    """Echo's subscribe has no acknowledgement; wait until the server has it."""
    import asyncio

    for _ in range(500):
        if server.rooms.count(channel) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{channel} never reached {count} subscribers")
