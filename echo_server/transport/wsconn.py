"""The websocket side of a connection, after the HTTP upgrade.

A small ``asyncio.Protocol`` with slots: an idle websocket costs this object,
its frame parser and the transport, and no task or queue. Slow readers are
found by the transport's own write-buffer limits (``pause_writing``) rather
than by checking buffer sizes on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .deadlines import Bucket
from .websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RESERVED_CLOSE_CODES,
    FrameParser,
    ProtocolError,
    close_frame,
    encode_frame,
)


class WebSocketListener(Protocol):
    """What a websocket tells the Engine.IO server (which imports this module, so this
    module names it by what it does rather than importing it back)."""

    def report_error(self, kind: str, message: str, *args: object) -> None: ...
    def on_ws_text(self, ws: WebSocketConnection, text: str) -> None: ...
    def on_ws_binary(self, ws: WebSocketConnection, data: bytes) -> None: ...
    def on_ws_closed(self, ws: WebSocketConnection, reason: str) -> None: ...

log = logging.getLogger("echo_server.websocket")


def _discard(frame: bytes) -> None:
    """``write`` of a closed connection: a fan-out in progress may still hold it."""


# Messages of one connection handled before the loop serves the others: a read can bring
# megabytes (uvloop reads until the socket is empty), 100,000 subscribes of one client would
# otherwise hold every other client for seconds.
SLICE = 64


class HeldWrites(list[bytes]):
    """What a websocket writes while it is held (``hold_writes``), and the entry that waits in
    a ``Deadlines`` for its release (``release_held``): the socket carries nothing for it, so
    only a socket being held pays for the wait, one object, for a few milliseconds."""

    __slots__ = ("closing", "due", "due_slot", "ws")

    def __init__(self, ws: WebSocketConnection, first: bytes) -> None:
        self.append(first)  # (list.__new__ made it empty; list.__init__ has nothing to add)
        self.ws = ws
        self.due: Bucket | None = None
        self.due_slot = 0
        self.closing = False  # closed while held: its close frame is the last of the list


def release_held(held: HeldWrites, now: float) -> None:
    """A ``Deadlines``' look at held writes: their time has come."""
    held.ws.release(held)


class WebSocketConnection(asyncio.Protocol):
    __slots__ = ("backlog", "closed", "engine", "on_lost", "parser", "session", "transport",
                 "write")

    # The transport's own (C, under uvloop) write while open, _discard once closed:
    # the fan-out calls it once per recipient, so no Python frame sits in between.
    write: Callable[[bytes], None]

    def __init__(self, engine: WebSocketListener, transport: asyncio.Transport, max_size: int,
                 high_water: int) -> None:
        self.engine = engine
        self.transport = transport
        self.parser = FrameParser(max_size)
        self.session: Any = None  # the engine's session this socket carries
        self.closed = False
        self.on_lost: Callable[[], None] | None = None  # the HTTP side's per-address count
        # Messages read but not handled yet (reading is paused meanwhile), or None.
        self.backlog: deque[tuple[int, bytes]] | None = None
        self.write = transport.write
        transport.set_write_buffer_limits(high=high_water)

    def hold_writes(self, first: bytes) -> HeldWrites:
        """From now until ``release``, writes wait in the list returned (``first`` leads)."""
        held = HeldWrites(self, first)
        self.write = held.append
        return held

    def release(self, held: HeldWrites) -> None:
        transport = self.transport
        if held.closing:  # what it said before its close, then the close (``close``)
            if not transport.is_closing():
                transport.write(b"".join(held))
                transport.close()
        elif not self.closed:
            self.write = transport.write
            transport.write(b"".join(held))

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except ProtocolError as exc:
            kind = "oversized" if exc.code == 1009 else "bad_frame"
            self.engine.report_error(kind, "websocket: %s", exc)
            self.close(exc.code)
            return
        if self.backlog is not None:  # read before the pause took effect: after the rest
            self.backlog.extend(messages)
            return
        if len(messages) > SLICE:
            # The rest after the loop served the others, a slice at a time; nothing more is
            # read until then (the client's own sends wait in the socket's buffers).
            self.backlog = deque(messages)
            self.transport.pause_reading()
            self._next_slice()
            return
        for opcode, payload in messages:
            self._message(opcode, payload)

    def _next_slice(self) -> None:
        backlog = self.backlog
        if backlog is None:
            return
        for _ in range(min(SLICE, len(backlog))):
            opcode, payload = backlog.popleft()
            self._message(opcode, payload)
        if self.closed:
            self.backlog = None
        elif backlog:
            asyncio.get_running_loop().call_soon(self._next_slice)
        else:
            self.backlog = None
            self.transport.resume_reading()

    def _message(self, opcode: int, payload: bytes) -> None:
        if self.closed:
            return
        if opcode == OP_TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                self.engine.report_error("bad_frame", "websocket: invalid UTF-8")
                self.close(CLOSE_INVALID_DATA)
                return
            self.engine.on_ws_text(self, text)
        elif opcode == OP_BINARY:
            self.engine.on_ws_binary(self, payload)
        elif opcode == OP_PING:
            self.transport.write(encode_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            code = CLOSE_NORMAL
            if len(payload) >= 2:
                code = int.from_bytes(payload[:2], "big")
            if not 1000 <= code < 5000 or code in RESERVED_CLOSE_CODES:
                code = CLOSE_NORMAL
            self.close(code, reason="client close")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()
        self.engine.on_ws_closed(self, "transport close")
        self.parser = None  # type: ignore[assignment]

    def pause_writing(self) -> None:
        # The peer reads slower than we write: drop it rather than buffer without bound.
        self.engine.report_error("slow_client", "websocket: write buffer over the high-water "
                                 "mark, dropping the client")
        self.abort()

    def resume_writing(self) -> None:
        pass

    def _closing(self) -> None:
        self.closed = True
        self.write = _discard

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        held = getattr(self.write, "__self__", None)  # the list its writes wait in, if held
        self._closing()
        if isinstance(held, HeldWrites):
            # Closed before its first write went out (a refusal the handshake's own step
            # decided, as a bad token's): the client gets the open packet and the refusal it
            # waits for, then the close, in that order and when they would have gone.
            held.append(close_frame(code))
            held.closing = True
        else:
            try:
                self.transport.write(close_frame(code))
            finally:
                self.transport.close()
        self.engine.on_ws_closed(self, reason or "server close")

    def abort(self) -> None:
        # No session callback here: this runs inside a fan-out loop, and the
        # room being iterated must not change under it. connection_lost follows.
        if not self.closed:
            self._closing()
            self.transport.abort()

    def going_away(self) -> None:
        self.close(CLOSE_GOING_AWAY, "server shutting down")
