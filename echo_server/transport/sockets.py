"""Socket.IO on the single namespace ``/``, for protocols 4 and 5.

Protocol 4 (socket.io 2, Engine.IO 3): the server connects the client to
``/`` by itself, pushing ``40`` unasked, and the socket id is the engine sid.
Protocol 5 (socket.io 3+, Engine.IO 4): the client sends ``40`` (with an
optional auth payload) and gets ``40{"sid": ...}``, a namespace id that differs
from the engine sid; it is what ``socket.id`` returns in the browser and so
what Laravel sees as ``X-Socket-ID``.

The layer knows sockets and packets, not Laravel channels: events go to a
``SocketHandler``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from echo_common.jsoncodec import dumps

from .engine import EngineServer, Handshake, Session
from .ids import new_id
from .packets import (
    SIO_ACK,
    SIO_BINARY_ACK,
    SIO_BINARY_EVENT,
    SIO_CONNECT,
    SIO_DISCONNECT,
    SIO_EVENT,
    PacketError,
    emit_packet,
    parse_sio,
)

log = logging.getLogger("echo_server.sockets")


ConnectResult = bool | str | None


class SocketHandler(Protocol):
    def on_connect(self, socket: Socket, auth: Any) -> ConnectResult | Awaitable[ConnectResult]:
        """None/True accepts; False or a string (the message the client sees) refuses."""

    def on_connected(self, socket: Socket, auth: Any) -> Callable[[], None] | None:
        """The socket is connected; its ``id`` and ``pid`` are final when this returns.
        What it returns runs once the CONNECT reply is on its way (a recovered socket's
        missed packets must follow it)."""

    def on_refused(self, socket: Socket, message: str) -> None: ...
    def on_event(self, socket: Socket, event: str, args: list[Any]) -> None: ...
    def on_disconnect(self, socket: Socket, reason: str) -> None: ...


class Socket:
    """A client on namespace ``/``; what the layers above hold as a connection."""

    __slots__ = ("__weakref__", "connected", "id", "pid", "session", "skip_binary", "state")

    def __init__(self, session: Session, sid: str) -> None:
        self.session = session
        self.id = sid
        # Connection-state recovery (protocol 5): the private id its client comes back with.
        self.pid: str | None = None
        self.connected = False
        self.skip_binary = 0
        self.state: Any = None  # the layers above keep theirs here

    @property
    def handshake(self) -> Handshake:
        return self.session.handshake

    @property
    def eio(self) -> int:
        return self.session.eio

    def emit(self, event: str, *args: Any) -> None:
        if self.connected:
            self.session.send(emit_packet(event, *args))

    def send_packet(self, packet: str) -> None:
        self.session.send(packet)

    def disconnect(self, reason: str = "server namespace disconnect") -> None:
        if not self.session.closed:
            self.session.send("41")
            self.session.close(reason)


class SocketServer:
    """Implements the engine's listener: turns Engine.IO messages into socket events."""

    def __init__(self, handler: SocketHandler) -> None:
        self.handler = handler
        self.engine: EngineServer | None = None
        self._connecting: set[asyncio.Future[None]] = set()  # handlers deciding on a connect

    def attach(self, engine: EngineServer) -> None:
        self.engine = engine

    # -- EngineListener -------------------------------------------------------
    def on_open(self, session: Session) -> None:
        if session.eio == 3:
            socket = Socket(session, session.sid)
            session.socket = socket
            self._connect(socket, None)
        else:
            # Protocol 5: wait for the client's CONNECT; its id comes then.
            session.socket = Socket(session, "")

    def on_message(self, session: Session, text: str) -> None:
        socket: Socket = session.socket  # type: ignore[assignment]
        try:
            packet = parse_sio(text)
        except PacketError as exc:
            self._bad_packet(socket, f"unparsable packet: {exc}")
            return
        if packet.nsp != "/":
            if packet.type == SIO_CONNECT:
                self._refuse_namespace(socket, packet.nsp)
            return
        ptype = packet.type
        if ptype == SIO_EVENT:
            if not socket.connected:
                if session.eio == 4:
                    # socket.io 4 closes such a client ("invalid state"); socket.io-client
                    # itself holds its emits until the CONNECT answer.
                    self._bad_packet(socket, "event before CONNECT")
                return
            data = packet.data
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                self._bad_packet(socket, "event without a name")
                return
            try:
                self.handler.on_event(socket, data[0], data[1:])
            except Exception:
                log.exception("error handling %r from %s", data[0], socket.id)
        elif ptype == SIO_CONNECT:
            if session.eio == 4:
                if socket.id:  # connected, or being connected: socket.io 4 closes
                    self._bad_packet(socket, "CONNECT on a namespace already connected")
                    return
                socket.id = new_id()
                self._connect(socket, packet.data)
        elif ptype == SIO_DISCONNECT:
            session.close("client namespace disconnect")
        elif ptype in (SIO_BINARY_EVENT, SIO_BINARY_ACK):
            # Laravel Echo never sends binary; drop the event and its attachments.
            socket.skip_binary = packet.attachments
        elif ptype == SIO_ACK:
            pass
        else:
            self._bad_packet(socket, f"unexpected packet type {ptype}")

    def on_binary(self, session: Session, data: bytes) -> None:
        socket: Socket = session.socket  # type: ignore[assignment]
        if socket.skip_binary > 0:
            socket.skip_binary -= 1
        else:
            self._bad_packet(socket, "unexpected binary message")

    def on_close(self, session: Session, reason: str) -> None:
        socket: Socket | None = session.socket  # type: ignore[assignment]
        if socket is None:
            return
        if socket.connected:
            socket.connected = False
            try:
                self.handler.on_disconnect(socket, reason)
            except Exception:
                log.exception("error in disconnect handler for %s", socket.id)

    # -- internals ------------------------------------------------------------
    def _connect(self, socket: Socket, auth: Any) -> None:
        result = self.handler.on_connect(socket, auth)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._connect_when_decided(socket, auth, result))
            self._connecting.add(task)  # the loop itself keeps tasks only weakly
            task.add_done_callback(self._connecting.discard)
        else:
            self._finish_connect(socket, auth, result)

    async def _connect_when_decided(self, socket: Socket, auth: Any,
                                    decision: Awaitable[ConnectResult]) -> None:
        """Finished in the step in which the handler's coroutine returns. A done callback
        would run a step later, and a client that closes in between would never connect
        nor disconnect, keeping whatever the handler set up for it after its last look at
        the session (a token's expiry timer holds the socket until the token expires)."""
        try:
            result = await decision
        except Exception:
            log.exception("connect handler failed")
            result = "Internal server error"
        self._finish_connect(socket, auth, result)

    def _finish_connect(self, socket: Socket, auth: Any, result: ConnectResult) -> None:
        session = socket.session
        if session.closed:
            return
        if result is None or result is True:
            socket.connected = True
            then = self.handler.on_connected(socket, auth)
            if session.eio == 3:
                session.send("40")
            elif socket.pid is None:
                session.send("40" + dumps({"sid": socket.id}))
            else:
                session.send("40" + dumps({"sid": socket.id, "pid": socket.pid}))
            if then is not None:
                then()
            return
        message = result if isinstance(result, str) else "Not authorized"
        self.handler.on_refused(socket, message)
        if session.eio == 3:
            session.send("44" + dumps(message))
            session.end("connect refused")
        else:
            session.send("44" + dumps({"message": message}))

    def _refuse_namespace(self, socket: Socket, nsp: str) -> None:
        if socket.session.eio == 3:
            socket.send_packet(f"44{nsp}," + dumps("Invalid namespace"))
        else:
            socket.send_packet(f"44{nsp}," + dumps({"message": "Invalid namespace"}))

    def _bad_packet(self, socket: Socket, message: str) -> None:
        if self.engine is not None:
            self.engine.report_error("bad_frame", "socket.io: %s (closing that connection)",
                                     message)
        socket.session.close("parse error")
