"""The Python share of the hot paths, measured in one process with no sockets: a quiet A/B
for changes that the side-by-side benchmark's ±20 % run-to-run spread would hide.

    .venv/bin/python bench/inprocess.py connect [--eio 4] [--count 5000]
    .venv/bin/python bench/inprocess.py events  [--channels 2000] [--batches 200]
    .venv/bin/python bench/inprocess.py subscriptions [--connections 20] [--channels 5000]
                                                      [--recovery]
    .venv/bin/python bench/inprocess.py api     [--channels 2000] [--batch 1] [--fresh]
    .venv/bin/python bench/inprocess.py idle    [--kind pusher|eio3|eio4|http] [--count 5000]
    .venv/bin/python bench/inprocess.py fanout  [--clients 1000] [--events 200]

``connect``: a real EchoServer (no Redis) is handed websocket upgrades, the client's ``40``
(EIO4) and Echo's ``subscribe`` as the bytes a client sends, through transports that only
count what is written. ``events``: clients connected that way, one per channel, then the
benchmark's 584-byte Laravel messages as Redis replies, 100 per read, through the Redis
source's reply reader and parser and the server's hub. ``api``: Pusher clients, one per
channel, then the same event as pusher-php-server POSTs it (signed, one per request or
``batch_events`` of ``--batch``), 50 keep-alive connections at a time (``--fresh``: each
request on a connection of its own), through the HTTP parser, the API and the hub.
``fanout``: Pusher clients on one channel, each event published to all of them as an API
publish hands it over, their transports' ``write`` a C call that keeps nothing (so what is
left is the Python share of a delivered message). Each prints CPU µs per unit. What they
leave out is the kernel (system calls, loopback TCP): that is what ``bench/run.py`` measures.
``subscriptions``: what one subscription costs in memory (tracemalloc, Python's own
allocations), each connection in channels of its own, as an attacker's would be, and with
``--recovery`` what the same connections cost once dropped and parked for a recovery.
``idle``: what an idle connection costs in memory (tracemalloc), subscribed to one shared
channel, once its open packet is out and its first deadline is scheduled; ``--kind http``: a
keep-alive HTTP connection waiting for its next request, after one ``GET /healthz``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from publisher import EVENT, MessageTemplate  # noqa: E402
from pusher_api import Events, signed_request  # noqa: E402
from sidebyside.servers import PUSHER_APP  # noqa: E402

from broadcaster.event import BroadcastEvent  # noqa: E402
from broadcaster.sources.redis import RedisPubSubSource  # noqa: E402
from broadcaster.sources.redis_wire import _Protocol  # noqa: E402
from echo_server.config import load_config  # noqa: E402
from echo_server.process.server import EchoServer, tune_gc  # noqa: E402
from echo_server.transport.http import HttpConnection  # noqa: E402
from echo_server.transport.websocket import OP_TEXT  # noqa: E402
from tests.support.raw import client_frame  # noqa: E402

KEY_PREFIX = "laravel_database_"  # Laravel's default Redis prefix, as bench/run.py uses


class CountingTransport:
    """What an uvloop transport offers the server, minus the socket."""

    __slots__ = ("closed", "protocol", "written")

    def __init__(self) -> None:
        self.protocol: Any = None
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed


async def start_server(**options: Any) -> EchoServer:
    directory = tempfile.mkdtemp(prefix="echo-inprocess-")
    Path(directory, "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": 0,
        "clients": [{"appId": "a", "key": "k"}, {**PUSHER_APP}],
        "subscribers": {"http": True, "redis": False}, **options}))
    server = EchoServer(load_config("laravel-echo-server.json", directory, environ={},
                                    cwd=directory))
    await server.start()
    tune_gc()  # what `serve` does once the server is up
    return server


class Connector:
    def __init__(self, server: EchoServer, eio: int) -> None:
        self.server, self.eio = server, eio
        key = base64.b64encode(os.urandom(16)).decode()
        self.upgrade = (f"GET /socket.io/?EIO={eio}&transport=websocket HTTP/1.1\r\n"
                        "Host: 127.0.0.1:6001\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode()
        self.connect = client_frame(OP_TEXT, b"40")

    def open(self, channel: str, *more: str) -> CountingTransport:
        transport = CountingTransport()
        http = HttpConnection(self.server._route, self.server._upgrade, self.server.http_guard)
        http.connection_made(transport)  # type: ignore[arg-type]
        http.data_received(self.upgrade)
        ws = transport.protocol
        if self.eio == 4:
            ws.data_received(self.connect)
        ws.data_received(b"".join(client_frame(OP_TEXT, (
            f'42["subscribe",{{"channel":{json.dumps(name)},"auth":{{"headers":{{}}}}}}]'
        ).encode()) for name in (channel, *more)))
        return transport


def open_pusher(server: EchoServer, channel: str) -> CountingTransport:
    key = base64.b64encode(os.urandom(16)).decode()
    transport = CountingTransport()
    http = HttpConnection(server._route, server._upgrade, server.http_guard)
    http.connection_made(transport)  # type: ignore[arg-type]
    http.data_received((f"GET /app/{PUSHER_APP['key']}?protocol=7 HTTP/1.1\r\n"
                        "Host: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
                        ).encode())
    transport.protocol.data_received(client_frame(OP_TEXT, json.dumps(
        {"event": "pusher:subscribe", "data": {"channel": channel}}).encode()))
    return transport


def open_http(server: EchoServer) -> CountingTransport:
    """A keep-alive connection, answered once: held by its transport, as the loop's is."""
    transport = CountingTransport()
    http = transport.protocol = HttpConnection(server._route, server._upgrade,
                                               server.http_guard)
    http.connection_made(transport)  # type: ignore[arg-type]
    http.data_received(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert transport.written and not transport.closed, "the request was not answered"
    return transport


async def measure_api(channels: int, batch: int, fresh: bool, rounds: int = 40,
                      lanes: int = 50) -> None:
    server = await start_server()
    names = [f"bench.{i}" for i in range(channels)]
    for name in names:
        open_pusher(server, name)
    events = Events()
    app = f"/apps/{PUSHER_APP['appId']}"
    path = f"{app}/events" if batch == 1 else f"{app}/batch_events"

    def request(index: int) -> bytes:
        chosen = [names[(index * batch + k) % channels] for k in range(batch)]
        body = (events.trigger(chosen[0], time.monotonic_ns()) if batch == 1
                else events.batch(chosen, time.monotonic_ns()))
        return signed_request(6001, path, body, keep_alive=not fresh)

    requests = [request(i) for i in range(rounds * lanes)]  # signed outside the measure
    fanout = server.core.fanout

    async def run() -> int:
        before = fanout.delivered
        kept = [HttpConnection(server._route, server._upgrade, server.http_guard)
                for _ in range(lanes)]
        answers = [CountingTransport() for _ in kept]
        for conn, transport in zip(kept, answers, strict=True):
            conn.connection_made(transport)  # type: ignore[arg-type]
        for r in range(rounds):
            for lane in range(lanes):
                conn = kept[lane]
                if fresh:
                    conn = HttpConnection(server._route, server._upgrade, server.http_guard)
                    conn.connection_made(answers[lane])  # type: ignore[arg-type]
                conn.data_received(requests[r * lanes + lane])
                if fresh:
                    conn.connection_lost(None)
            for _ in range(4):  # the API's tasks, then the bus's batch
                await asyncio.sleep(0)
        for conn in kept:
            conn.connection_lost(None)
        return fanout.delivered - before

    await run()  # warm up
    for _ in range(3):
        started = time.process_time()
        delivered = await run()
        spent = time.process_time() - started
        print(f"API, batch {batch}{', fresh connections' if fresh else ''}: "
              f"{spent / delivered * 1e6:.2f} µs CPU per event ({delivered} of "
              f"{rounds * lanes * batch})")
    await server.stop()


async def measure_fanout(clients: int, count: int) -> None:
    server = await start_server()
    sink: collections.deque[bytes] = collections.deque(maxlen=0)  # a C write keeping nothing
    for transport in [open_pusher(server, "bench") for _ in range(clients)]:
        transport.protocol.write = sink.append
    events = Events()
    batches = [[BroadcastEvent("bench", EVENT, json.loads(events.trigger("bench", i))["data"])]
               for i in range(count)]
    server.publish_events(batches[0])  # warm up
    for _ in range(3):
        before = server.core.fanout.delivered
        started = time.process_time()
        for batch in batches:
            server.publish_events(batch)
        spent = time.process_time() - started
        delivered = server.core.fanout.delivered - before
        print(f"fan-out to {clients} Pusher clients: {spent / delivered * 1e6:.3f} µs CPU per "
              f"delivered message ({delivered})")
    await server.stop()


def redis_reply(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


async def measure_connect(eio: int, count: int) -> None:
    server = await start_server()
    connector = Connector(server, eio)
    kept = [connector.open("bench") for _ in range(200)]  # warm up
    started = time.process_time()
    kept += [connector.open("bench") for _ in range(count)]
    spent = time.process_time() - started
    assert server.core.rooms.count("bench") == len(kept), "a subscribe did not land"
    print(f"connect+subscribe, EIO{eio}: {spent / count * 1e6:.1f} µs CPU each ({count})")
    await server.stop()


async def measure_events(channels: int, batches: int, per_read: int = 100) -> None:
    server = await start_server()
    connector = Connector(server, 4)
    names = [f"admin-dashboard.{i}" for i in range(channels)]
    for name in names:
        connector.open(name)
    template = MessageTemplate()
    reads = [b"".join(redis_reply(b"pmessage", KEY_PREFIX.encode() + b"*",
                                  (KEY_PREFIX + names[(b * per_read + i) % channels]).encode(),
                                  template.render(time.monotonic_ns()).encode())
                      for i in range(per_read)) for b in range(batches)]
    source = RedisPubSubSource("redis://127.0.0.1:1/0", KEY_PREFIX)
    reader = _Protocol()

    def run() -> int:
        delivered = 0
        for data in reads:
            reader.data_received(data)
            batch = [event for reply in reader.take(len(reader.replies))
                     if (event := source._decode(reply[2], reply[3])) is not None]
            delivered += server.core.fanout.deliver(batch)
        return delivered

    run()  # warm up
    for _ in range(3):
        started = time.process_time()
        delivered = run()
        spent = time.process_time() - started
        print(f"events, one recipient each: {spent / delivered * 1e6:.2f} µs CPU per event "
              f"({delivered})")
    await server.stop()


async def measure_subscriptions(connections: int, channels: int, recovery: bool) -> None:
    import gc
    import tracemalloc

    options: dict[str, Any] = {"limits": {"maxSubscriptionsPerAddress": 0}}
    if recovery:
        options["socketio"] = {"connectionStateRecovery": {}}
    server = await start_server(**options)
    connector = Connector(server, 4)
    connector.open("warm-up")
    total = connections * channels
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [connector.open(*(f"App.Models.Lead.{c:04d}-{n:06d}.updates"
                             for n in range(channels))) for c in range(connections)]
    # A read of many messages is handled in slices, a turn of the loop each (wsconn.SLICE).
    for _ in range(total):
        if server.core.subscriptions.total == total + 1:
            break
        await asyncio.sleep(0)
    gc.collect()
    live = tracemalloc.get_traced_memory()[0] - before
    assert server.core.subscriptions.total == total + 1, "subscribes did not land"
    print(f"subscriptions: {live / total:.0f} bytes each, live ({connections} connections "
          f"x {channels} channels of their own, recovery {'on' if recovery else 'off'})")
    if recovery:
        for transport in kept:
            transport.protocol.connection_lost(None)  # a drop: parked
        gc.collect()
        parked = tracemalloc.get_traced_memory()[0] - before
        print(f"subscriptions: {parked / total:.0f} bytes each, parked")
    tracemalloc.stop()
    await server.stop()


async def measure_idle(kind: str, count: int) -> None:
    import gc
    import tracemalloc

    server = await start_server(limits={"maxConnectionsPerAddress": 0})
    connector = Connector(server, 3 if kind == "eio3" else 4)

    def open_one() -> CountingTransport:
        if kind == "http":
            return open_http(server)
        return open_pusher(server, "idle") if kind == "pusher" else connector.open("idle")

    kept = [open_one() for _ in range(200)]  # warm up
    await asyncio.sleep(0.05)  # the EIO3 open packets held after the 101 are written
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept += [open_one() for _ in range(count)]
    await asyncio.sleep(0.05)
    gc.collect()
    live = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    landed = kind == "http" or server.core.rooms.count("idle") == len(kept)
    assert landed, "a subscribe did not land"
    print(f"idle {kind} connection: {live / count:.0f} bytes each ({count})")
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    connect = sub.add_parser("connect")
    connect.add_argument("--eio", type=int, choices=(3, 4), default=4)
    connect.add_argument("--count", type=int, default=5000)
    events = sub.add_parser("events")
    events.add_argument("--channels", type=int, default=2000)
    events.add_argument("--batches", type=int, default=200)
    subscriptions = sub.add_parser("subscriptions")
    subscriptions.add_argument("--connections", type=int, default=20)
    subscriptions.add_argument("--channels", type=int, default=5000)
    subscriptions.add_argument("--recovery", action="store_true")
    api = sub.add_parser("api")
    api.add_argument("--channels", type=int, default=2000)
    api.add_argument("--batch", type=int, default=1)
    api.add_argument("--fresh", action="store_true")
    idle = sub.add_parser("idle")
    idle.add_argument("--kind", choices=("pusher", "eio3", "eio4", "http"), default="pusher")
    idle.add_argument("--count", type=int, default=5000)
    fanout = sub.add_parser("fanout")
    fanout.add_argument("--clients", type=int, default=1000)
    fanout.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the no-Redis and open-origins notices, every run
    if args.what == "connect":
        asyncio.run(measure_connect(args.eio, args.count))
    elif args.what == "subscriptions":
        asyncio.run(measure_subscriptions(args.connections, args.channels, args.recovery))
    elif args.what == "idle":
        asyncio.run(measure_idle(args.kind, args.count))
    elif args.what == "api":
        asyncio.run(measure_api(args.channels, args.batch, args.fresh))
    elif args.what == "fanout":
        asyncio.run(measure_fanout(args.clients, args.events))
    else:
        asyncio.run(measure_events(args.channels, args.batches))


if __name__ == "__main__":
    main()
