"""Connection-state recovery on another instance: two instances share Redis and read the
same Redis stream; a client dropped from one comes back to the other and gets what it
missed from the stream, as the same socket, or a clean refusal when the gap held a packet
no stream recorded (a relayed publish, a whisper, a presence change)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import redis.asyncio as aioredis

from broadcaster import Broadcaster
from broadcaster.event import BroadcastEvent
from echo_server.server import EchoServer
from tests.conftest import ServerFactory
from tests.support.raw import RawWebSocket
from tests.support.waits import wait_until

CHANNEL, OTHER = "leads-management", "admin-capacity"


def stream_url(redis_url: str, stream: str) -> str:
    return redis_url.replace("redis://", "redis-stream://", 1) + \
        f"?stream={stream}&warmup=0&block=0.2"


async def _pair(make_server: ServerFactory, url: str, **recovery: Any
                ) -> tuple[EchoServer, EchoServer]:
    prefix = f"rc{secrets.token_hex(3)}_"
    servers = []
    for name in "ab":
        server = await make_server({
            "database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
            "sources": [url], "instanceId": f"{prefix}{name}",
            "socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 10_000,
                                                     **recovery}}})
        assert server.core.shared is not None, "recovery on any instance is set up"
        servers.append(server)
    return servers[0], servers[1]


async def _client(server: EchoServer, connect: str = "40") -> tuple[RawWebSocket, dict]:
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket")
    assert (await ws.recv_text()).startswith("0")
    ws.send_text(connect)
    reply = await ws.recv_text()
    assert reply.startswith("40{"), reply
    return ws, json.loads(reply[2:])


async def _dropped(server: EchoServer, ws: RawWebSocket) -> None:
    ws.writer.transport.abort()  # no close frame: a network drop
    sessions = server.core.sessions
    assert sessions is not None
    await wait_until(lambda: len(sessions.parked) == 1, "the drop noticed")


async def _subscribed(server: EchoServer, ws: RawWebSocket, *channels: str) -> None:
    for channel in channels:
        ws.send_text(f'42["subscribe",{{"channel":"{channel}"}}]')
    await wait_until(lambda: all(server.core.rooms.count(c) for c in channels), "subscribed")


def _recoveries(server: EchoServer, result: str) -> float:
    assert server.metrics is not None
    prefix = f'echo_recoveries_total{{result="{result}"}} '
    for line in server.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


async def test_a_client_dropped_from_one_instance_recovers_on_the_other(
        make_server: ServerFactory, redis_url: str) -> None:
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    a, b = await _pair(make_server, url)
    ws, hello = await _client(a)
    await _subscribed(a, ws, CHANNEL, OTHER)
    await wait_until(lambda: b.core.rooms.count(CHANNEL) == 0, "b has nobody")
    async with Broadcaster(url) as publisher:
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 1})
        first = await ws.next_event()
        assert first[:3] == ["lead.assigned", CHANNEL, {"n": 1, "socket": None}]
        offset = first[3]
        seq, stream, relay = offset.split(".")  # here, the stream's place, the relay's
        assert int(seq) > 0 and "-" in stream and relay.isdigit()
        await _dropped(a, ws)
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 2})
        await publisher.publish([OTHER, CHANNEL], "admin.capacity.updated", {"n": 3})
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 4}, socket=hello["sid"])
        await publisher.publish("elsewhere", "lead.assigned", {"n": 5})
        stream_ids = [entry_id for entry_id, _ in
                      await aioredis.from_url(redis_url).xrange(url.split("stream=")[1]
                                                                .split("&")[0])]
        await wait_until(lambda: b.core.fanout.positions is not None
                         and b.core.fanout.positions.stream.startswith(
                             stream_ids[-1].decode()), "b delivered the gap")
        back, again = await _client(
            b, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert again == hello  # the same socket (X-Socket-ID) and private id
        replayed = [await back.next_event() for _ in range(3)]
        assert [(p[1], p[2]["n"]) for p in replayed] == [(CHANNEL, 2), (OTHER, 3),
                                                         (CHANNEL, 3)]
        assert _recoveries(b, "recovered") == 1
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 6})
        assert (await back.next_event())[1:3] == [CHANNEL, {"n": 6, "socket": None}]
        # b owns the session now: a second drop comes back to b, as the same socket.
        await _dropped(b, back)
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 7})
        third, again = await _client(
            b, "40" + json.dumps({"pid": hello["pid"], "offset": replayed[-1][3]}))
        assert again == hello
        assert [(p[1], p[2]["n"]) for p in [await third.next_event() for _ in range(2)]] \
            == [(CHANNEL, 6), (CHANNEL, 7)]
        await third.close()


async def test_a_gap_with_a_packet_no_stream_recorded_is_refused(
        make_server: ServerFactory, redis_url: str) -> None:
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    a, b = await _pair(make_server, url)
    ws, hello = await _client(a)
    await _subscribed(a, ws, CHANNEL)
    async with Broadcaster(url) as publisher:
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 1})
        offset = (await ws.next_event())[3]
        await _dropped(a, ws)
        # Through the HTTP API: relayed to the other instances, in no stream.
        a.publish(BroadcastEvent(CHANNEL, "lead.assigned", '{"n":2}'))
        cluster = b.cluster
        assert cluster is not None
        relayed = cluster.relayed_in
        await wait_until(lambda: cluster.relayed_in > relayed, "relayed")
        fresh, hello2 = await _client(
            b, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert hello2["sid"] != hello["sid"]  # a new socket: it must subscribe again
        assert _recoveries(b, "unrecorded") == 1
        await fresh.close()
