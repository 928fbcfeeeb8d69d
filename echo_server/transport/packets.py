"""Engine.IO payload framing (protocols 3 and 4) and Socket.IO packet parsing.

Packets are handled as ``str`` holding the Engine.IO packet, type digit first
(``"42[...]"`` is an Engine.IO message carrying a Socket.IO event). Only the
polling transport needs payload framing; a websocket frame carries one packet.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from echo_common.jsoncodec import dumps, loads

# Engine.IO packet types.
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0123456"
# Socket.IO packet types.
SIO_CONNECT, SIO_DISCONNECT, SIO_EVENT, SIO_ACK, SIO_ERROR, SIO_BINARY_EVENT, SIO_BINARY_ACK = (
    range(7)
)

RECORD_SEPARATOR = "\x1e"
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class PacketError(ValueError):
    """A payload or packet that cannot be parsed: the connection is closed."""


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as JavaScript's ``String.length`` counts.

    Engine.IO 3 polling prefixes each packet with this length; Python's
    ``len`` counts code points, which differs for characters outside the BMP.
    """
    if text.isascii():
        return len(text)
    return len(text) + len(_ASTRAL.findall(text))


def encode_payload_v3(packets: list[str]) -> str:
    return "".join(f"{utf16_length(p)}:{p}" for p in packets)


def encode_payload_v4(packets: list[str]) -> str:
    return RECORD_SEPARATOR.join(packets)


def _advance_utf16(text: str, start: int, units: int) -> int:
    """Index in ``text`` that lies ``units`` UTF-16 code units after ``start``."""
    end = start + units
    chunk = text[start:end]
    if chunk.isascii() or not _ASTRAL.search(chunk):
        return end
    i = start
    n = len(text)
    while units > 0 and i < n:
        units -= 2 if ord(text[i]) > 0xFFFF else 1
        i += 1
    if units < 0:
        raise PacketError("length splits a character")
    return i


def decode_payload_v3(text: str) -> list[str]:
    packets: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        colon = text.find(":", pos)
        digits = text[pos:colon]
        if colon <= pos or colon - pos > 10 or not (digits.isascii() and digits.isdigit()):
            raise PacketError("bad length prefix")
        length = int(digits)
        end = _advance_utf16(text, colon + 1, length)
        if end > n:
            raise PacketError("payload shorter than its length prefix")
        packets.append(text[colon + 1 : end])
        pos = end
    return packets


def decode_binary_payload_v3(data: bytes) -> list[str]:
    """The XHR2 binary payload form of Engine.IO 3; only its string packets matter.

    Each packet is ``<0|1><length as decimal digit bytes><0xFF><data>``;
    binary packets (type 1) are skipped since Laravel Echo never sends any.
    """
    packets: list[str] = []
    pos = 0
    n = len(data)
    while pos < n:
        kind = data[pos]
        marker = data.find(b"\xff", pos + 1)
        if kind not in (0, 1) or marker < 0 or marker - pos > 11:
            raise PacketError("bad binary payload")
        digits = data[pos + 1 : marker]
        if any(d > 9 for d in digits):
            raise PacketError("bad binary payload length")
        length = int("".join(str(d) for d in digits) or "0")
        start = marker + 1
        if kind == 0:
            # The length counts UTF-16 units of this packet only; the next packet's header
            # (0x00, digits, 0xFF) follows it, and is not UTF-8: escaped, then cut off.
            text = data[start:start + 4 * length].decode("utf-8", "surrogateescape")
            end_char = _advance_utf16(text, 0, length)
            if end_char > len(text):
                raise PacketError("payload shorter than its length prefix")
            packet = text[:end_char]
            try:
                size = len(packet.encode("utf-8"))
            except UnicodeEncodeError:
                raise PacketError("binary payload packet is not UTF-8") from None
            packets.append(packet)
            pos = start + size
        else:
            pos = start + length
        if pos > n:
            raise PacketError("payload shorter than its length prefix")
    return packets


def decode_payload_v4(text: str) -> list[str]:
    return text.split(RECORD_SEPARATOR)


def jsonp_script(index: str, payload: str) -> str:
    # Only the ASCII digits of ``j`` are kept, as engine.io does: anything else would be
    # script of the requester's choosing in a text/javascript answer.
    index = "".join(ch for ch in index[:16] if "0" <= ch <= "9") or "0"
    # U+2028/2029 are valid in JSON but end a line in older JavaScript engines.
    encoded = dumps(payload).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"___eio[{index}]({encoded});"


_JSONP_NEWLINE = re.compile(r"(\\)?\\n")


def jsonp_post_data(body: bytes) -> str:
    """Decode a JSONP POST (form field ``d``), undoing its escaped newlines.

    engine.io-client turns a newline into backslash-n and a JSON escape
    backslash-n into backslash-backslash-n; both must be undone, or the JSON
    escape grows by a character and the length prefixes no longer line up.
    """
    fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
    data = fields.get("d", [""])[0]
    return _JSONP_NEWLINE.sub(lambda m: "\\n" if m.group(1) else "\n", data)


@dataclass(slots=True)
class SioPacket:
    type: int
    nsp: str = "/"
    data: Any = None
    ack_id: int | None = None
    attachments: int = 0


def parse_sio(text: str) -> SioPacket:
    """Parse a Socket.IO packet (the part after the Engine.IO ``4``).

    Accepts protocol 4 (socket.io 2) and 5 (socket.io 3+): they share this
    grammar ``<type>[<attachments>-][<nsp>,][<ack id>][<json>]``.
    """
    if not text or not "0" <= text[0] <= "6":
        raise PacketError("unknown packet type")
    pkt = SioPacket(ord(text[0]) - 48)
    pos = 1
    n = len(text)
    if pkt.type in (SIO_BINARY_EVENT, SIO_BINARY_ACK):
        dash = text.find("-", pos)
        if dash < 0 or not _ascii_digits(text[pos:dash]) or dash - pos > 6:
            raise PacketError("bad attachment count")
        pkt.attachments = int(text[pos:dash])
        pos = dash + 1
    if pos < n and text[pos] == "/":
        comma = text.find(",", pos)
        if comma < 0:
            pkt.nsp = text[pos:]
            pos = n
        else:
            pkt.nsp = text[pos:comma]
            pos = comma + 1
        q = pkt.nsp.find("?")
        if q >= 0:
            pkt.nsp = pkt.nsp[:q]
    start = pos
    while pos < n and "0" <= text[pos] <= "9":
        pos += 1
    if pos > start:
        if pos - start > 15:
            raise PacketError("bad ack id")
        pkt.ack_id = int(text[start:pos])
    if pos < n:
        try:
            pkt.data = loads(text[pos:])
        except (ValueError, RecursionError) as exc:
            raise PacketError("invalid JSON in packet") from exc
    return pkt


def _ascii_digits(text: str) -> bool:
    """``int()`` takes any Unicode digit (``"²"``); the wire allows only ASCII ones."""
    return text.isascii() and text.isdigit()


_event_heads: dict[tuple[str, str], bytes] = {}
EVENT_HEADS_MAX = 4096


def event_message(event: str, channel: str, data_json: str | bytes,
                  offset: int | str = 0) -> bytes:
    """The Engine.IO message for ``emit(event, channel, data)``, as UTF-8, with ``data``
    already encoded: the event's data is encoded once, never per recipient, and stays
    bytes from the source's parser to the frame (polling decodes it only when a polling
    client is among the recipients). The ``42["event","channel",`` head repeats from
    event to event; it is kept. An ``offset`` (connection-state recovery) is the last
    argument, a string, as socket.io-client ≥ 4.6 expects it."""
    key = (event, channel)
    head = _event_heads.get(key)
    if head is None:
        if len(_event_heads) >= EVENT_HEADS_MAX:
            _event_heads.clear()
        head = _event_heads[key] = f"42[{dumps(event)},{dumps(channel)},".encode()
    if isinstance(data_json, str):
        data_json = data_json.encode("utf-8")
    if offset:
        if isinstance(offset, int):
            return b"".join((head, data_json, b',"%d"]' % offset))
        return b"".join((head, data_json, b',"', offset.encode(), b'"]'))
    return b"".join((head, data_json, b"]"))


def emit_packet(event: str, *args: Any) -> str:
    return "42" + dumps([event, *args])
