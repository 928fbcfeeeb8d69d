"""Mutated Engine.IO 3/4, Socket.IO and HTTP input, from fixed seeds and in bounded time:
whatever arrives, the sender gets an answer or a close, nothing is logged as a traceback,
and a healthy client on the same server keeps receiving events."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable

import pytest

from broadcaster.event import BroadcastEvent
from echo_server.process.server import EchoServer
from echo_server.transport.engine import EngineServer
from tests.conftest import ServerFactory
from tests.support.raw import RawWebSocket, client_frame, encode_v3, wait_until

SEEDS = (11, 23, 42)
ROUNDS = 120
CONCURRENCY = 24
FAST_LIMITS = {"headerTimeout": 200, "bodyTimeout": 200, "keepAliveTimeout": 200}
FAST_PINGS = {"pingInterval": 300, "pingTimeout": 300, "upgradeTimeout": 300,
              "connectTimeout": 300}

PACKETS = [
    "40", '40{"token":"x"}', "2", "3", "2probe", "5", "6", "1", "41",
    '42["subscribe",{"channel":"leads-management"}]',
    '42["subscribe",{"channel":"private-admin-dashboard.1","auth":{"headers":{"X-A":"1"}}}]',
    '42["subscribe",{"channel":"presence-admins"}]',
    '42["unsubscribe",{"channel":"leads-management"}]',
    '42["client event",{"event":"client-typing","channel":"private-chat","data":{"a":1}}]',
    '421["subscribe",{"channel":"x"}]', '451-["client event",{"_placeholder":true,"num":0}]',
    '42/admin,["subscribe",{"channel":"x"}]', "bAQID",
]
SPICE = ["\\ud800", "²", "\x00", "\xff", "[" * 600, "{\"a\":" * 50, "-1", "99999999999",
         "\u2028", "😀", '"', "\\", ",", "/"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four edits: flips, cuts, repeats, and the characters parsers trip on."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[at:at + rng.randint(1, 8)]
        elif op == 2:
            out[at:at] = rng.choice(SPICE).encode("utf-8", "surrogatepass")
        elif op == 3:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif op == 4:
            piece = out[at:at + rng.randint(1, 32)]
            out[at:at] = piece * rng.randint(2, 50)
        elif op == 5:
            del out[at:]
        else:
            digits = str(rng.choice((0, 1, 9, 10, 65535, 10**12))).encode()
            out[at:at] = digits
    return bytes(out)


def http_corpus(port: int, sid: str) -> list[bytes]:
    host = f"Host: 127.0.0.1:{port}\r\n"
    payload3 = encode_v3(PACKETS[:10]).encode("utf-8")
    payload4 = "\x1e".join(PACKETS[:10]).encode("utf-8")
    event = b'{"channel":"leads-management","name":"lead.assigned","data":{"lead":{"id":1}}}'
    return [
        f"GET /socket.io/?EIO=3&transport=polling&t=1 HTTP/1.1\r\n{host}\r\n".encode(),
        f"GET /socket.io/?EIO=4&transport=polling&j=1 HTTP/1.1\r\n{host}\r\n".encode(),
        f"GET /socket.io/?EIO=3&transport=polling&sid={sid} HTTP/1.1\r\n{host}\r\n".encode(),
        (f"POST /socket.io/?EIO=3&transport=polling&sid={sid} HTTP/1.1\r\n{host}"
         f"Content-Type: text/plain\r\nContent-Length: {len(payload3)}\r\n\r\n").encode()
        + payload3,
        (f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n{host}"
         f"Transfer-Encoding: chunked\r\n\r\n{len(payload4):x}\r\n").encode()
        + payload4 + b"\r\n0\r\n\r\n",
        (f"POST /apps/test-app/events?auth_key=test-key HTTP/1.1\r\n{host}"
         f"Content-Type: application/json\r\nContent-Length: {len(event)}\r\n\r\n").encode()
        + event,
        f"GET /apps/test-app/channels?auth_key=test-key HTTP/1.1\r\n{host}\r\n".encode(),
        f"GET /status.json?auth_key=test-key HTTP/1.1\r\n{host}\r\n".encode(),
        (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n{host}Upgrade: websocket\r\n"
         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        + client_frame(0x1, b"40"),
        f"OPTIONS /socket.io/?EIO=3&transport=polling HTTP/1.1\r\n{host}Origin: x\r\n"
        f"Access-Control-Request-Method: POST\r\n\r\n".encode(),
    ]


async def send_and_drain(server: EchoServer, data: bytes) -> bytes:
    """Send ``data``; read whatever comes back until the server closes (its timeouts are
    sub-second here, so a request it cannot finish ends too)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            return await reader.read(-1)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


async def run_rounds(make_one: Callable[[random.Random], bytes], server: EchoServer,
                     seed: int) -> list[bytes]:
    rng = random.Random(seed)
    inputs = [make_one(rng) for _ in range(ROUNDS)]
    answers: list[bytes] = []
    for start in range(0, len(inputs), CONCURRENCY):
        batch = inputs[start:start + CONCURRENCY]
        answers += await asyncio.gather(*(send_and_drain(server, data) for data in batch))
    return answers


class Healthy:
    """An EIO4 client that keeps answering pings while the fuzzing goes on."""

    def __init__(self, ws: RawWebSocket) -> None:
        self.ws = ws
        self.events: asyncio.Queue[list[object]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            text = await self.ws.recv_text(timeout=60)
            if text == "2":
                self.ws.send_text("3")
            elif text.startswith("42"):
                self.events.put_nowait(json.loads(text[2:]))

    async def still_served(self, server: EchoServer, n: int) -> None:
        server.publish(BroadcastEvent("healthy", "ok", str(n)))
        async with asyncio.timeout(3):
            assert await self.events.get() == ["ok", "healthy", n]
        assert not self.task.done()
        self.task.cancel()


async def healthy_client(server: EchoServer) -> Healthy:
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket")
    assert (await ws.recv_text()).startswith("0")
    ws.send_text("40")
    assert (await ws.recv_text()).startswith("40")
    ws.send_text('42["subscribe",{"channel":"healthy"}]')
    await wait_until(lambda: server.core.rooms.count("healthy") == 1)
    return Healthy(ws)


@pytest.fixture
async def fuzz_server(make_server: ServerFactory) -> EchoServer:
    return await make_server({"limits": FAST_LIMITS, "socketio": FAST_PINGS}, redis=False)


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad[:5]


@pytest.mark.parametrize("seed", SEEDS)
async def test_fuzzed_http_requests(fuzz_server: EchoServer, seed: int,
                                    caplog: pytest.LogCaptureFixture) -> None:
    server = fuzz_server
    healthy = await healthy_client(server)
    opened = await send_and_drain(server, b"GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\n"
                                          b"Host: x\r\nConnection: close\r\n\r\n")
    body = opened.split(b"\r\n\r\n", 1)[1].decode()
    sid = json.loads(body[body.index("{"):body.index("}") + 1])["sid"]
    corpus = http_corpus(server.port, sid)
    answers = await run_rounds(lambda rng: mutate(rng, rng.choice(corpus)), server, seed)
    for answer in answers:
        if answer:
            assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    assert sum(1 for a in answers if a.startswith(b"HTTP/1.1 4")) > ROUNDS // 10
    await healthy.still_served(server, seed)
    assert_no_tracebacks(caplog)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eio", [3, 4])
async def test_fuzzed_socketio_packets(fuzz_server: EchoServer, seed: int, eio: int,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """Over a websocket: mutated packets, as text frames and, now and then, as mangled
    frames."""
    server = fuzz_server
    healthy = await healthy_client(server)
    upgrade = (f"GET /socket.io/?EIO={eio}&transport=websocket HTTP/1.1\r\nHost: x\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    start = client_frame(0x1, b"40") if eio == 4 else b""

    def one(rng: random.Random) -> bytes:
        frames = [client_frame(0x1, mutate(rng, p.encode()))
                  for p in rng.sample(PACKETS, rng.randint(1, 4))]
        if rng.random() < 0.2:
            frames[-1] = mutate(rng, frames[-1])
        return upgrade + start + b"".join(frames) + client_frame(0x8, b"\x03\xe8")

    answers = await run_rounds(one, server, seed)
    # The upgrade itself is not mutated: it is accepted, or reset with what followed it.
    assert all(a.startswith(b"HTTP/1.1 101 ") or not a for a in answers)
    assert sum(1 for a in answers if a) > ROUNDS // 2
    await healthy.still_served(server, seed)
    await wait_until(lambda: len(server.part(EngineServer).sessions) == 1, timeout=5)
    assert_no_tracebacks(caplog)
