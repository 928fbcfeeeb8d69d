"""RFC 6455 framing, just the parts a Socket.IO server needs.

Server-to-client frames are never masked, so one encoded frame can be written
to any number of connections: that is what makes fan-out cheap. Compression
(permessage-deflate) is deliberately not offered: it would deflate every frame
once per recipient and cost ~100 KB of zlib state per connection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
# Codes a peer may send but never put in a close frame (RFC 6455 7.4.1): 1005 means "no
# code was given", 1006 "closed without a close frame", 1015 "TLS failed".
RESERVED_CLOSE_CODES = frozenset((1004, 1005, 1006, 1015))
MAX_FRAGMENTS = 1024  # frames of one fragmented message

_KNOWN_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


class ProtocolError(Exception):
    """The peer broke RFC 6455; the connection is closed with ``code``."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def valid_key(key: str) -> bool:
    """RFC 6455: base64 of 16 bytes. Anything else, non-ASCII above all, is a bad request."""
    if len(key) != 24 or not key.isascii():
        return False
    try:
        return len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except binascii.Error:
        return False


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def switching_protocols(key: str) -> bytes:
    """The 101 answer to an upgrade whose ``Sec-WebSocket-Key`` passed ``valid_key``."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked frame, ready to be written to every member of a room."""
    n = len(payload)
    head = 0x80 | opcode
    if n < 126:
        return bytes((head, n)) + payload
    if n < 0x10000:
        return _pack_short(head, 126, n) + payload
    return _pack_long(head, 127, n) + payload


def text_frame(text: str) -> bytes:
    return encode_frame(text.encode("utf-8"), OP_TEXT)


def close_frame(code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
    return encode_frame(struct.pack("!H", code) + reason.encode("utf-8")[:120], OP_CLOSE)


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR through one big integer: much faster in CPython than a per-byte loop.
    n = len(payload)
    if n == 0:
        return payload
    repeated = (mask * (n // 4 + 1))[:n]
    return (
        int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")
    ).to_bytes(n, "little")


class FrameParser:
    """Incremental parser of client frames; yields whole messages.

    Bounded: a message (after reassembly of fragments) larger than
    ``max_size`` raises ``ProtocolError(CLOSE_TOO_BIG)`` before it is buffered, and so
    does one of more than ``MAX_FRAGMENTS`` frames (empty ones cost memory too).
    """

    __slots__ = ("_buf", "_frag_len", "_frag_op", "_frags", "max_size")

    def __init__(self, max_size: int) -> None:
        self._buf = b""
        self._frag_op = 0
        self._frags: list[bytes] | None = None
        self._frag_len = 0
        self.max_size = max_size

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Return the complete messages in ``data``: (opcode, payload) pairs.

        Control frames (ping, pong, close) are returned as they come, even in
        the middle of a fragmented message, as RFC 6455 allows.
        """
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise ProtocolError("reserved bits set (no extension was negotiated)")
            if not b1 & 0x80:
                raise ProtocolError("client frame is not masked")
            opcode = b0 & 0x0F
            if opcode not in _KNOWN_OPCODES:
                raise ProtocolError(f"unknown opcode {opcode}")
            fin = b0 & 0x80
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if opcode >= 0x8:
                if n > 125 or not fin:
                    raise ProtocolError("bad control frame")
            elif n + self._frag_len > self.max_size:
                raise ProtocolError("message too big", CLOSE_TOO_BIG)
            total = hdr + 4 + n
            if end - pos < total:
                break
            mask = buf[pos + hdr : pos + hdr + 4]
            payload = _unmask(buf[pos + hdr + 4 : pos + total], mask)
            pos += total
            if opcode >= 0x8:
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._frags is None:
                    raise ProtocolError("continuation without a message")
                if len(self._frags) >= MAX_FRAGMENTS:
                    raise ProtocolError("message in too many fragments", CLOSE_TOO_BIG)
                self._frags.append(payload)
                self._frag_len += n
                if fin:
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frags = None
                    self._frag_len = 0
            elif self._frags is not None:
                raise ProtocolError("new message inside a fragmented one")
            elif fin:
                out.append((opcode, payload))
            else:
                self._frag_op = opcode
                self._frags = [payload]
                self._frag_len = n
        self._buf = buf[pos:] if pos < end else b""
        return out
