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

    def hold_writes(self, first: bytes) -> list[bytes]:
        """From now until ``release``, writes wait in the list returned (``first`` leads)."""
        held = [first]
        self.write = held.append
        return held

    def release(self, held: list[bytes]) -> None:
        if not self.closed:
            self.write = self.transport.write
            self.transport.write(b"".join(held))

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
        self._closing()
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


class FirstWrites:
    """Websockets whose first bytes go out ``gap`` seconds after their 101, in a write of
    their own (see ``engine.OPEN_PACKET_GAP``): one loop timer for all that wait, not one
    each, armed at the earliest and releasing at once every socket due within ``slack`` of
    it, so a burst of connections costs a deque entry each and a handful of wake-ups."""

    __slots__ = ("_timer", "gap", "slack", "waiting")

    def __init__(self, gap: float, slack: float = 0.001) -> None:
        self.gap = gap
        self.slack = slack
        self.waiting: deque[tuple[float, WebSocketConnection, list[bytes]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, ws: WebSocketConnection, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.gap
        self.waiting.append((due, ws, ws.hold_writes(first)))
        if self._timer is None:
            self._timer = loop.call_at(due, self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.slack
        waiting = self.waiting
        while waiting and waiting[0][0] <= until:
            _, ws, held = waiting.popleft()
            ws.release(held)
        self._timer = loop.call_at(waiting[0][0], self._release) if waiting else None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            _, ws, held = self.waiting.popleft()
            ws.release(held)

