"""Raw Engine.IO clients for framing tests: what a browser's transport sends, byte for byte.

``Polling`` speaks the polling transport over an aiohttp ``ClientSession``; ``open_ws`` opens
an aiohttp websocket with autoping and autoclose off (so every frame is seen); ``RawWebSocket``
is a websocket over bare asyncio streams, for what aiohttp refuses to send (unmasked frames,
invalid UTF-8) and for reading the 101 response's headers.

The EIO3 payload codec here is written independently of the server's: lengths are counted by
encoding to UTF-16, as JavaScript's ``String.length`` does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from echo_server.process.server import EchoServer

RS = "\x1e"
DEFAULT_TIMEOUT = 3.0


# --------------------------------------------------------------------------- helpers


def js_length(text: str) -> int:
    """JavaScript's ``String.length``: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def encode_v3(packets: list[str]) -> str:
    return "".join(f"{js_length(p)}:{p}" for p in packets)


def decode_v3(text: str) -> list[str]:
    """Split an EIO3 payload, taking each length in UTF-16 units; strict about every prefix."""
    packets: list[str] = []
    pos = 0
    while pos < len(text):
        colon = text.index(":", pos)
        digits = text[pos:colon]
        assert digits.isdigit(), f"bad length prefix {digits!r} in {text!r}"
        units = int(digits)
        rest = text[colon + 1:].encode("utf-16-le")
        assert len(rest) >= 2 * units, f"payload shorter than its prefix: {text!r}"
        packet = rest[: 2 * units].decode("utf-16-le", "strict")
        packets.append(packet)
        pos = colon + 1 + len(packet)
    return packets


def decode_v4(text: str) -> list[str]:
    return text.split(RS)


async def wait_until(condition: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT,
                     message: str = "condition") -> None:
    """Poll ``condition`` every 10 ms; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.01)


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


async def http_request(http: aiohttp.ClientSession, method: str, url: str,
                       timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Reply:
    async with asyncio.timeout(timeout):
        async with http.request(method, url, **kwargs) as resp:
            return Reply(resp.status, resp.headers, await resp.read())


# --------------------------------------------------------------------------- polling


@dataclass
class Polling:
    """One polling client: ``handshake`` then ``get``/``post`` with its sid."""

    http: aiohttp.ClientSession
    base: str  # http://127.0.0.1:port
    eio: int = 3
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    sid: str | None = None
    open_data: dict[str, Any] | None = None

    def url(self, **extra: str) -> str:
        params = {"EIO": str(self.eio), "transport": "polling", **self.query}
        if self.sid is not None:
            params["sid"] = self.sid
        params.update(extra)
        return f"{self.base}/socket.io/?" + "&".join(f"{k}={v}" for k, v in params.items())

    def decode(self, body: str) -> list[str]:
        return decode_v3(body) if self.eio == 3 else decode_v4(body)

    def encode(self, packets: list[str]) -> str:
        return encode_v3(packets) if self.eio == 3 else RS.join(packets)

    async def handshake(self) -> tuple[Reply, list[str]]:
        reply = await http_request(self.http, "GET", self.url(t="hs"), headers=self.headers)
        assert reply.status == 200, (reply.status, reply.body)
        packets = self.decode(reply.text)
        assert packets[0][0] == "0", packets
        self.open_data = json.loads(packets[0][1:])
        self.sid = self.open_data["sid"]
        return reply, packets

    async def get_reply(self, timeout: float = DEFAULT_TIMEOUT) -> Reply:
        return await http_request(self.http, "GET", self.url(t=str(time.monotonic_ns())),
                                  timeout=timeout, headers=self.headers)

    async def get(self, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        reply = await self.get_reply(timeout)
        assert reply.status == 200, (reply.status, reply.body)
        return self.decode(reply.text)

    async def post_raw(self, body: bytes | str, **kwargs: Any) -> Reply:
        data = body.encode("utf-8") if isinstance(body, str) else body
        headers = {"Content-Type": "text/plain;charset=UTF-8", **self.headers}
        headers.update(kwargs.pop("headers", {}))
        return await http_request(self.http, "POST", self.url(**kwargs), data=data,
                                  headers=headers)

    async def post(self, *packets: str) -> None:
        reply = await self.post_raw(self.encode(list(packets)))
        assert reply.status == 200, (reply.status, reply.body)
        assert reply.body == b"ok"

    async def get_until(self, predicate: Callable[[str], bool],
                        timeout: float = DEFAULT_TIMEOUT) -> tuple[str, list[str]]:
        """Poll until a packet matches; EIO4 pings met on the way are answered."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching packet; got {seen!r}")
            for packet in await self.get(timeout=left):
                if predicate(packet):
                    return packet, seen
                seen.append(packet)
                if self.eio == 4 and packet == "2":
                    await self.post("3")


# --------------------------------------------------------------------------- aiohttp websocket


async def open_ws(http: aiohttp.ClientSession, base: str, eio: int = 3, sid: str | None = None,
                  **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    url = f"{base.replace('http', 'ws', 1)}/socket.io/?EIO={eio}&transport=websocket"
    if sid is not None:
        url += f"&sid={sid}"
    return await http.ws_connect(url, autoping=False, autoclose=False, max_msg_size=0,
                                 **kwargs)


async def ws_recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = DEFAULT_TIMEOUT,
                  pong: bool = False) -> str:
    """The next text message; with ``pong``, EIO4 server pings are answered and skipped."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r}")
            if pong and msg.data == "2":
                await ws.send_str("3")
                continue
            return str(msg.data)


async def ws_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = DEFAULT_TIMEOUT,
                    pong: bool = False) -> list[str]:
    """Read until the server closes; return the text messages seen before that."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                if pong and msg.data == "2":
                    await ws.send_str("3")
                seen.append(str(msg.data))
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return seen
            raise AssertionError(f"unexpected {msg.type!r}")


# --------------------------------------------------------------------------- raw websocket

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True) -> bytes:
    """One client frame; masked unless told otherwise (RFC 6455 requires it)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    flag = 0x80 if mask else 0
    if n < 126:
        head += bytes([flag | n])
    elif n < 0x10000:
        head += bytes([flag | 126]) + struct.pack("!H", n)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big"))
    return head + key + masked.to_bytes(n, "big")


class RawWebSocket:
    """A websocket over asyncio streams: every byte is ours to choose."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int,
                 headers: dict[str, str], body: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body  # for a refused upgrade

    @classmethod
    async def connect(cls, server: EchoServer, query: str = "EIO=3&transport=websocket",
                      headers: dict[str, str] | None = None, early: bytes = b"",
                      timeout: float = DEFAULT_TIMEOUT, key: str | None = None,
                      local_addr: tuple[str, int] | None = None,
                      path: str = "/socket.io/") -> RawWebSocket:
        """Upgrade; ``early`` bytes (frames) go out in the same write as the request."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port,
                                                           local_addr=local_addr)
            key = key or base64.b64encode(os.urandom(16)).decode()
            extra = dict(headers or {})
            host = extra.pop("Host", f"127.0.0.1:{server.port}")  # a page's own, if given
            lines = [f"GET {path}?{query} HTTP/1.1", f"Host: {host}",
                     "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                     "Sec-WebSocket-Version: 13"]
            lines += [f"{k}: {v}" for k, v in extra.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + early)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            parsed: dict[str, str] = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    parsed[name.strip().lower()] = value.strip()
            body = b""
            if status != 101 and "content-length" in parsed:
                body = await reader.readexactly(int(parsed["content-length"]))
            return cls(reader, writer, status, parsed, body)

    def send_frame(self, opcode: int, payload: bytes, *, mask: bool = True,
                   fin: bool = True) -> None:
        self.writer.write(client_frame(opcode, payload, mask=mask, fin=fin))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    async def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; (-1, b"") at end of stream."""
        async with asyncio.timeout(timeout):
            try:
                b0, b1 = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return -1, b""
            assert b0 & 0x70 == 0, "server set reserved bits (no extension was negotiated)"
            assert b0 & 0x80, "server fragmented a frame"
            assert not b1 & 0x80, "server masked a frame"
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def next_event(self) -> list[Any]:
        """The next Socket.IO event's arguments, answering EIO4 pings on the way."""
        while True:
            text = await self.recv_text()
            if text == "2":
                self.send_text("3")
            elif text.startswith("42"):
                return json.loads(text[2:])

    async def recv_text(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        opcode, payload = await self.recv_frame(timeout)
        assert opcode == OP_TEXT, (opcode, payload)
        return payload.decode("utf-8")

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> int | None:
        """Read until the server's close frame or end of stream; the close code, if any."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.recv_frame(timeout)
                if opcode == -1:
                    return None
                if opcode == OP_CLOSE:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def pusher_client(server: Any, key: str,
                        headers: dict[str, str] | None = None) -> tuple[RawWebSocket, str]:
    """A pusher-js-like websocket at ``/app/{key}``, its connection established: it and its
    socket id."""
    ws = await RawWebSocket.connect(server, "protocol=7&client=js&version=8.4.0",
                                    path=f"/app/{key}", headers=headers)
    hello = json.loads(await ws.recv_text())
    assert hello["event"] == "pusher:connection_established", hello
    return ws, json.loads(hello["data"])["socket_id"]


async def next_pusher_message(ws: RawWebSocket) -> dict[str, Any]:
    """The next Pusher message, answering the server's pings on the way."""
    while True:
        msg = json.loads(await ws.recv_text())
        if msg["event"] != "pusher:ping":
            return dict(msg)
        ws.send_text('{"event":"pusher:pong","data":{}}')


async def socketio_client(server: Any, connect: str = "40", path: str = "/socket.io/",
                          headers: dict[str, str] | None = None) -> tuple[RawWebSocket, dict]:
    """An Engine.IO 4 websocket at ``path`` that sent ``connect`` (``40``, or
    ``40{pid, offset}`` to recover) and got its ``40{sid, pid}``: the socket and that
    reply."""
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket", headers=headers,
                                    path=path)
    assert (await ws.recv_text()).startswith("0")
    ws.send_text(connect)
    reply = await ws.recv_text()
    assert reply.startswith("40{"), reply
    return ws, json.loads(reply[2:])


async def eio3_recovering_client(server: Any, query: str) -> tuple[RawWebSocket, str, dict]:
    """socket.io-client 2 as our kit drives it (README: the extension): an Engine.IO 3
    websocket whose handshake query opts in to recovery or brings a pid and offset back; the
    socket, its engine sid, and the ``echo:recovery`` answer (``pid``, ``recovered``)."""
    ws = await RawWebSocket.connect(server, f"EIO=3&transport=websocket&{query}")
    sid = json.loads((await ws.recv_text())[1:])["sid"]
    assert await ws.recv_text() == "40"
    recovery = json.loads((await ws.recv_text())[2:])
    assert recovery[0] == "echo:recovery"
    return ws, sid, recovery[1]


async def token_handshake(server: EchoServer, token: str,
                          path: str = "/socket.io/") -> asyncio.StreamWriter:
    """A websocket handshake carrying the token, as socket.io-client 2 sends it; the answer
    is never read."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write((f"GET {path}?EIO=3&transport=websocket&token={token} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    return writer


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a client that walks away does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
