"""Connection-state recovery on another instance: two instances share Redis and read the
same Redis stream; a client dropped from one comes back to the other and gets what it
missed from the stream, as the same socket, or a clean refusal when the gap held a packet
no stream recorded (a relayed publish, a whisper, a presence change)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from broadcaster import Broadcaster
from broadcaster.event import BroadcastEvent
from echo_server.process.server import EchoServer
from tests.conftest import (
    FAST_SOCKETIO,
    ServerFactory,
    free_port,
    private_redis,
    recoveries,
    redis_config,
    requires_node,
)
from tests.support.auth_backend import AuthBackend
from tests.support.http import http_client
from tests.support.instance import instance_process
from tests.support.many_pages import NodePages, Ticker, subscribed_on
from tests.support.raw import RawWebSocket, eio3_recovering_client, socketio_client
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import ClientFactory, dropped, wait_until

CHANNEL, OTHER = "leads-management", "admin-capacity"


def stream_url(redis_url: str, stream: str) -> str:
    return redis_url.replace("redis://", "redis-stream://", 1) + \
        f"?stream={stream}&warmup=0&block=0.2"


async def _pair(make_server: ServerFactory, url: str, **options: Any
                ) -> tuple[EchoServer, EchoServer]:
    prefix = f"rc{secrets.token_hex(3)}_"
    servers = []
    for name in "ab":
        server = await make_server({
            "database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
            "sources": [url], "instanceId": f"{prefix}{name}",
            "socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 10_000}},
            **options})
        assert server.core.shared is not None, "recovery on any instance is set up"
        servers.append(server)
    return servers[0], servers[1]


async def _subscribed(server: EchoServer, ws: RawWebSocket, *channels: str) -> None:
    for channel in channels:
        ws.send_text(f'42["subscribe",{{"channel":"{channel}"}}]')
    await wait_until(lambda: all(server.core.rooms.count(c) for c in channels), "subscribed")


async def test_a_client_dropped_from_one_instance_recovers_on_the_other(
        make_server: ServerFactory, redis_url: str) -> None:
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    a, b = await _pair(make_server, url)
    ws, hello = await socketio_client(a)
    await _subscribed(a, ws, CHANNEL, OTHER)
    await wait_until(lambda: b.core.rooms.count(CHANNEL) == 0, "b has nobody")
    async with Broadcaster(url) as publisher:
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 1})
        first = await ws.next_event()
        assert first[:3] == ["lead.assigned", CHANNEL, {"n": 1, "socket": None}]
        offset = first[3]
        seq, stream, relay = offset.split(".")  # here, the stream's place, the relay's
        assert int(seq) > 0 and "-" in stream and relay.isdigit()
        await dropped(a, ws)
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
        back, again = await socketio_client(
            b, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert again == hello  # the same socket (X-Socket-ID) and private id
        replayed = [await back.next_event() for _ in range(3)]
        assert [(p[1], p[2]["n"]) for p in replayed] == [(CHANNEL, 2), (OTHER, 3),
                                                         (CHANNEL, 3)]
        assert recoveries(b, "recovered") == 1
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 6})
        assert (await back.next_event())[1:3] == [CHANNEL, {"n": 6, "socket": None}]
        # b owns the session now: a second drop comes back to b, as the same socket.
        await dropped(b, back)
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 7})
        third, again = await socketio_client(
            b, "40" + json.dumps({"pid": hello["pid"], "offset": replayed[-1][3]}))
        assert again == hello
        assert [(p[1], p[2]["n"]) for p in [await third.next_event() for _ in range(2)]] \
            == [(CHANNEL, 6), (CHANNEL, 7)]
        await third.close()


async def test_our_socket_io_client_2_extension_recovers_on_the_other_instance(
        make_server: ServerFactory, redis_url: str) -> None:
    """The kit's Engine.IO 3 recovery (the pid and offset in the handshake's query) works
    across instances too; the socket id is the new engine session's, as on one instance."""
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    a, b = await _pair(make_server, url)
    ws, sid, hello = await eio3_recovering_client(a, "echoRecovery=1")
    await _subscribed(a, ws, CHANNEL)
    async with Broadcaster(url) as publisher:
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 1})
        offset = (await ws.next_event())[3]
        await dropped(a, ws)
        for n in (2, 3):
            await publisher.publish(CHANNEL, "lead.assigned", {"n": n})
        back, new_sid, again = await eio3_recovering_client(
            b, f"echoRecovery={hello['pid']}&echoOffset={offset}")
        assert again == {"pid": hello["pid"], "recovered": True} and new_sid != sid
        assert [(await back.next_event())[2]["n"] for _ in range(2)] == [2, 3]
        await publisher.publish(CHANNEL, "lead.assigned", {"n": 4})
        assert (await back.next_event())[2]["n"] == 4  # in its channel on b, once
    await back.close()


async def _one_event_then_dropped(server: EchoServer, ws: RawWebSocket, url: str,
                                  n: int = 1) -> str:
    """``ws`` joins CHANNEL on ``server``, gets stream event ``n``, then drops: that event's
    offset."""
    await _subscribed(server, ws, CHANNEL)
    async with Broadcaster(url) as publisher:
        await publisher.publish(CHANNEL, "lead.assigned", {"n": n})
        offset = (await ws.next_event())[3]
    await dropped(server, ws)
    return str(offset)


async def _dropped_after_one_event(make_server: ServerFactory, redis_url: str
                                   ) -> tuple[EchoServer, EchoServer, dict, str]:
    """Two instances; a socket on the first, in CHANNEL, that got one stream event and then
    dropped: (the instances, its CONNECT reply, that event's offset)."""
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    a, b = await _pair(make_server, url)
    ws, hello = await socketio_client(a)
    return a, b, hello, await _one_event_then_dropped(a, ws, url)


async def test_a_gap_with_a_packet_no_stream_recorded_is_refused(
        make_server: ServerFactory, redis_url: str) -> None:
    a, b, hello, offset = await _dropped_after_one_event(make_server, redis_url)
    # Through the HTTP API: relayed to the other instances, in no stream.
    a.publish(BroadcastEvent(CHANNEL, "lead.assigned", '{"n":2}'))
    cluster = b.cluster
    assert cluster is not None
    relayed = cluster.relayed_in
    await wait_until(lambda: cluster.relayed_in > relayed, "relayed")
    fresh, hello2 = await socketio_client(
        b, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
    assert hello2["sid"] != hello["sid"]  # a new socket: it must subscribe again
    assert recoveries(b, "unrecorded") == 1
    await fresh.close()


async def test_a_made_up_place_in_the_stream_is_refused_at_once(
        make_server: ServerFactory, redis_url: str) -> None:
    """An offset naming a stream entry that does not exist (from the future, say) gets a
    new socket straight away, not a connection held for the catch-up wait."""
    _, b, hello, offset = await _dropped_after_one_event(make_server, redis_url)
    seq, place, relay = offset.split(".")
    future = f"{seq}.{int(place.split('-')[0]) + 3_600_000}-0.{relay}"
    fresh, again = await socketio_client(
        b, "40" + json.dumps({"pid": hello["pid"], "offset": future}))
    assert again["sid"] != hello["sid"]
    assert recoveries(b, "bad_offset") == 1
    await fresh.close()


async def test_a_socket_in_a_presence_channel_is_not_recovered_elsewhere(
        make_server: ServerFactory, redis_url: str, auth_backend: AuthBackend) -> None:
    """Its members change when an instance goes (they leave, announced): no stream holds
    that, so the socket starts over on the other instance, and says why in the metrics."""
    auth_backend.presence("presence-leads-management", 1, {"name": "admin 1"})
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    a, b = await _pair(make_server, url, authHost=auth_backend.url)
    ws, hello = await socketio_client(a)
    ws.send_text('42["subscribe",{"channel":"presence-leads-management","auth":{}}]')
    assert (await ws.next_event())[0] == "presence:subscribed"
    offset = await _one_event_then_dropped(a, ws, url)
    fresh, hello2 = await socketio_client(
        b, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
    assert hello2["sid"] != hello["sid"]
    assert recoveries(b, "presence") == 1
    await fresh.close()


async def _stream_read(server: EchoServer) -> None:
    runner = next(r for r in server.runners if r.source.kind == "redis-stream")
    await asyncio.wait_for(runner.connected_event.wait(), 10)


async def _delivered_all(redis_url: str, url: str, *servers: EchoServer) -> None:
    """Until every server delivered the stream's last entry."""
    redis = aioredis.from_url(redis_url)
    try:
        [(last, _)] = await redis.xrevrange(url.split("stream=")[1].split("&")[0], count=1)
    finally:
        await redis.aclose()
    await wait_until(lambda: all(s.core.fanout.positions is not None
                                 and s.core.fanout.positions.stream.startswith(last.decode())
                                 for s in servers), "the stream delivered")


async def test_a_session_parked_outside_the_cluster_starts_over_on_another_instance(
        make_server: ServerFactory) -> None:
    """Redis did not answer when instance a started, so a stays out of the cluster for its
    run, and what its HTTP API publishes is marked nowhere another instance could see it.
    Redis comes back; a client of a drops while such a publish goes out, and comes back to
    b: a new socket (it subscribes again), never the same one missing that event. On a, its
    own instance, it still recovers whole."""
    prefix = f"rc{secrets.token_hex(3)}_"
    with private_redis() as redis_process:
        redis_process.stop()
        url = stream_url(redis_process.url, f"s{secrets.token_hex(3)}")

        async def instance(name: str) -> EchoServer:
            return await make_server({
                **redis_config(redis_process.url, keyPrefix=prefix), "database": "redis",
                "sources": [url], "instanceId": f"{prefix}{name}",
                "health": {"checkTimeout": 200},
                "socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 10_000}}},
                wait_for_redis=False)

        a = await instance("a")
        redis_process.start()
        b = await instance("b")
        assert a.cluster is not None and not a.cluster.running and b.state.peers is not None
        await _stream_read(a)
        await _stream_read(b)
        ws, hello = await socketio_client(a)
        offset = await _one_event_then_dropped(a, ws, url)
        async with http_client() as http, http.post(
                f"http://127.0.0.1:{a.port}/apps/test-app/events?auth_key=test-key",
                json={"channel": CHANNEL, "name": "lead.assigned",
                      "data": {"n": 2}}) as published:
            assert published.status == 200
        async with Broadcaster(url) as publisher:
            await publisher.publish(CHANNEL, "lead.assigned", {"n": 3})
        await _delivered_all(redis_process.url, url, a, b)
        elsewhere, hello_b = await socketio_client(
            b, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert hello_b["sid"] != hello["sid"]  # a new socket: it must subscribe again
        assert (recoveries(b, "recovered"), recoveries(b, "unknown_session")) == (0, 1)
        back, again = await socketio_client(
            a, "40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert again == hello  # the same socket, on its own instance
        assert [(await back.next_event())[2]["n"] for _ in range(2)] == [2, 3]
        await back.close()

        # Nor does a take over b's sessions: it would hold one that it never records, while
        # b's record of it stays in Redis for a third instance to replay from.
        offset_b = await _one_event_then_dropped(b, elsewhere, url, 4)
        fresh, hello_a = await socketio_client(
            a, "40" + json.dumps({"pid": hello_b["pid"], "offset": offset_b}))
        assert hello_a["sid"] != hello_b["sid"]
        assert (recoveries(a, "recovered"), recoveries(a, "unknown_session")) == (1, 1)
        await fresh.close()


# --------------------------------------------------------------- real processes, npm clients
def _options(prefix: str, name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
            "sources": [url], "instanceId": f"{prefix}{name}",
            "clients": [{"appId": "app", "key": "api-key"}],
            "health": {"drainDelay": 0},
            "socketio": {**FAST_SOCKETIO,
                         "connectionStateRecovery": {"maxDisconnectionDuration": 30_000}},
            **extra}


@requires_node
async def test_a_page_whose_instance_is_killed_recovers_on_the_other(
        tmp_path: Path, make_server: ServerFactory, node_client: ClientFactory,
        auth_backend: AuthBackend, redis_url: str) -> None:
    """kill -9 of the page's instance: the page reconnects (through the load balancer) to
    the other instance as the same socket, with every stream event published meanwhile, on
    its public and its private channel, and the app's auth endpoint is not asked again."""
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}")
    prefix = f"rc{secrets.token_hex(3)}_"
    auth_backend.allow_private("private-admin-dashboard.1")
    extra = {"authHost": auth_backend.url}
    async with instance_process(tmp_path, redis_url, _options(prefix, "a", url, **extra)) \
            as (a_process, a):
        b = await make_server(_options(prefix, "b", url, **extra))
        proxy = TcpProxy(a.port, b.port)  # to a while it accepts, else to b
        await proxy.start()
        try:
            page = await node_client("echo2-sio4", proxy.url, transports="websocket",
                                     reconnection_delay=100)
            connected = await page.expect("connected")
            await page.command({"cmd": "channel", "channel": CHANNEL,
                                "listen": [".lead.assigned"]})
            await page.command({"cmd": "private", "channel": "admin-dashboard.1",
                                "listen": [".lead.assigned"]})
            await wait_until(lambda: len(auth_backend.calls) == 1, "authorized")
            async with Broadcaster(url) as publisher:
                sent = [(CHANNEL, 0)]
                await publisher.publish(CHANNEL, "lead.assigned", {"n": 0})
                # Until the private subscription shows, each probe is a first event.
                got = await page.expect("event")
                assert (got["channel"], got["data"]["n"]) == (CHANNEL, 0)
                await publisher.publish("private-admin-dashboard.1", "lead.assigned",
                                        {"n": 1})
                sent.append(("private-admin-dashboard.1", 1))
                got = await page.expect("event")
                assert (got["channel"], got["data"]["n"]) == sent[-1]

                proxy.cut()  # held away while its instance dies
                a_process.kill()
                await a_process.wait()
                for n, channel in enumerate([CHANNEL, "private-admin-dashboard.1", CHANNEL],
                                            2):
                    await publisher.publish(channel, "lead.assigned", {"n": n})
                    sent.append((channel, n))
                proxy.release()
                back = await page.expect("connected", timeout=15)
                assert back["recovered"] is True
                assert back["socketId"] == connected["socketId"]
                got = [await page.expect("event") for _ in range(3)]
                assert [(m["channel"], m["data"]["n"]) for m in got] == sent[2:]
                await publisher.publish(CHANNEL, "lead.assigned", {"n": 5})
                got = await page.expect("event")
                assert got["data"]["n"] == 5  # still in its channels, nothing twice
            assert len(auth_backend.calls) == 1  # no second authorization
            assert recoveries(b, "recovered") == 1
            async with http_client() as http, \
                    http.get(f"http://127.0.0.1:{b.port}/readyz") as ready:
                assert (await ready.json())["recovery"] == "any"  # what ops can check
        finally:
            await proxy.stop()


@requires_node
async def test_a_rolling_restart_loses_nothing_and_repeats_nothing(
        tmp_path: Path, redis_url: str) -> None:
    """Both instances restarted with SIGTERM, one after the other, while fifty pages on a
    public channel receive a stream event every 50 ms: every page ends with every event,
    once, in order, having recovered at each move (to the other instance)."""
    await _restarted_under_pages(tmp_path, redis_url, instances=2, count=50)


@requires_node
async def test_a_lone_instance_restarted_gives_its_pages_what_they_missed(
        tmp_path: Path, redis_url: str) -> None:
    """One instance, redeployed (SIGTERM, started again under its instance id): its pages
    wait for it and come back as the same sockets with what was published meanwhile; it
    knows its previous life's sessions only from Redis."""
    await _restarted_under_pages(tmp_path, redis_url, instances=1, count=5)


async def _restarted_under_pages(tmp_path: Path, redis_url: str, *, instances: int,
                                 count: int) -> None:
    url = stream_url(redis_url, f"s{secrets.token_hex(3)}").replace("warmup=0", "warmup=0.3")
    prefix = f"rc{secrets.token_hex(3)}_"
    ports = [free_port() for _ in range(instances)]
    for index in range(instances):
        (tmp_path / str(index)).mkdir()

    def start(index: int) -> Any:
        return instance_process(tmp_path / str(index), redis_url,
                                _options(prefix, str(index), url), port=ports[index])

    stack = contextlib.AsyncExitStack()
    async with stack:
        processes = [(await stack.enter_async_context(start(i)))[0] for i in range(instances)]
        proxy = TcpProxy(*ports)  # to the first instance that accepts
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        pages = await stack.enter_async_context(NodePages(proxy.url, count, CHANNEL, "tick"))
        await subscribed_on(ports[0], CHANNEL, count, app="app", key="api-key")

        def moved(times: int) -> Callable[[list[dict[str, Any]]], bool]:
            return lambda report: all(page["connects"] > times for page in report)

        async with Ticker(url, CHANNEL, "tick", 0.05) as ticker:
            await pages.got(10)
            for index, process in enumerate(processes):
                process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(process.wait(), 20) == 0
                if instances > 1:  # to the other instance, before this one is back
                    await pages.until(moved(index + 1), "every page moved")
                await stack.enter_async_context(start(index))  # back, on the same port
                if instances == 1:
                    await pages.until(moved(index + 1), "every page came back")
                await pages.got(ticker.sent + 10)  # ten more events reach every page
        published = ticker.sent

        await pages.until(lambda report: all(page["received"][-1:] == [published - 1]
                                             for page in report), "every page has the last")
        for page in await pages.report():
            assert page["received"] == list(range(published))  # all, once, in order
            assert page["connects"] == 1 + instances and page["recovered"] == instances
            assert len(page["ids"]) == 1  # the same socket id throughout
