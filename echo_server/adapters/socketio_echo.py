"""Laravel Echo over Socket.IO: the only code that knows Echo's event names.

Echo's ``socket.io`` connector emits ``subscribe`` / ``unsubscribe`` / ``client event`` and
listens for ``presence:subscribed`` / ``presence:joining`` / ``presence:leaving`` and
``subscription_error``; a broadcast arrives as ``42["<event>","<channel>",<data>]``. The
same text serves Engine.IO 3 and 4 (only polling framing differs, and that happens when a
poll is answered), so one wire covers both generations.

About 400 lines because a socket's Echo life is here in order: which app its handshake came
to (and the seat it takes there), its recovery, its events, and its following the app as it
changes; the wires it is written with are the first hundred.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from channel_auth.jwt_auth import TokenSources
from echo_common.jsoncodec import loads

from ..apps.model import App
from ..apps.seats import AppSeats
from ..apps.tags import untagged
from ..core.channels import ChannelCore
from ..core.connection import ClientState, Item, Wire
from ..core.events import ConnectionClosed, ConnectionOpened
from ..core.fanout import MEMBER_ADDED, MEMBER_REMOVED
from ..core.history import Entry
from ..core.recovery import RecoveryRefused
from ..transport.packets import event_message
from ..transport.sockets import Socket
from ..transport.websocket import encode_frame
from .coalesce import write_coalesced
from .socketio_apps import NotServed, SocketIoApps

log = logging.getLogger("echo_server.socketio")

PRESENCE_EVENTS = {MEMBER_ADDED: "presence:joining", MEMBER_REMOVED: "presence:leaving"}
# Recovery for socket.io-client 2 (Engine.IO 3 has no CONNECT data), an extension only our
# kit (clients/js) speaks: the handshake's query opts in with `echoRecovery=1`, or brings the
# pid back (`echoRecovery=<pid>`, `echoOffset=<last offset>`); after `40` the server tells
# `42["echo:recovery",{"pid","recovered"}]`. The socket id is then the new engine session's.
EIO3_PID, EIO3_OFFSET, EIO3_OPT_IN, EIO3_EVENT = ("echoRecovery", "echoOffset", "1",
                                                  "echo:recovery")


class SocketIoWire:
    """The core's ``Wire`` for Socket.IO sockets. With ``offsets`` (connection-state
    recovery, Engine.IO 4 clients), every broadcast carries its history offset as its last
    argument; without, the packets are laravel-echo-server's."""

    __slots__ = ("offsets",)

    def __init__(self, offsets: bool = False) -> None:
        self.offsets = offsets

    def _message(self, channel: str, event: str, data_json: str | bytes,
                 offset: int | str) -> bytes:
        return event_message(PRESENCE_EVENTS.get(event, event), channel, data_json,
                             offset if self.offsets else 0)

    def send(self, members: Collection[Socket], channel: str,
             event: str, data_json: str | bytes, offset: int | str, exclude: Socket | None) -> int:
        message = self._message(channel, event, data_json, offset)
        frame = encode_frame(message)
        packet: str | None = None  # the text, for polling clients only
        # The loop below runs once per recipient: nothing in it that can be done once.
        for socket in members:
            if socket is exclude:
                continue
            ws = socket.session.ws
            if ws is not None:
                ws.write(frame)  # the transport's own write: no Python frame between
            else:
                if packet is None:
                    packet = message.decode("utf-8")
                socket.session.send_prebuilt(packet, frame)
        return len(members) - (exclude is not None and exclude in members)

    def send_batch(self, batch: Sequence[Item[Socket]]) -> int:
        """Polling clients queue them anyway and get them in one response."""
        message_for = self._message  # an isolated app's untags the channel's name
        framed: list[tuple[Collection[Socket], bytes, bytes, Socket | None]] = []
        for members, channel, event, data_json, offset, exclude in batch:
            message = message_for(channel, event, data_json, offset)
            framed.append((members, encode_frame(message), message, exclude))
        return write_coalesced(framed, True)

    def replay(self, connection: Socket, entries: list[Entry]) -> None:
        """What a recovered socket missed, in order, as it would have got it: over a
        websocket in one write (a wave of recoveries would otherwise be a system call per
        missed packet per client)."""
        messages = [self._message(entry.channel, entry.event, entry.data_json, entry.offset)
                    for entry in entries]
        ws = connection.session.ws
        if ws is not None:
            ws.write(b"".join([encode_frame(message) for message in messages]))
        else:
            for message in messages:
                connection.send_packet(message.decode("utf-8"))

    def subscribed(self, connection: Socket, channel: str,
                   members: list[dict[str, Any]] | None) -> None:
        if members is not None:  # Echo hears of public and private joins by silence
            connection.emit("presence:subscribed", channel, members)

    def cache_miss(self, connection: Socket, channel: str) -> None:
        pass  # Echo's socket.io side has no such event: the first broadcast just comes later

    def refused(self, connection: Socket, channel: str,
                status: int) -> None:
        connection.emit("subscription_error", channel, status)

    def disconnect(self, connection: Socket, reason: str) -> None:
        connection.disconnect(reason)

    def gone(self, connection: Socket) -> bool:
        return connection.session.closed


class IsolatedAppWire(SocketIoWire):
    """The Socket.IO wire of an isolated app's sockets (apps/tags.py): the same packets,
    under the channel names its clients know. A wire of its own, so the default app's
    fan-out does no untagging at all."""

    __slots__ = ()

    def _message(self, channel: str, event: str, data_json: str | bytes,
                 offset: int | str) -> bytes:
        return super()._message(untagged(channel), event, data_json, offset)

    def subscribed(self, connection: Socket, channel: str,
                   members: list[dict[str, Any]] | None) -> None:
        super().subscribed(connection, untagged(channel), members)

    def refused(self, connection: Socket, channel: str, status: int) -> None:
        super().refused(connection, untagged(channel), status)


def _recovery_request(socket: Socket, auth: Any) -> tuple[str | None, object]:
    """The pid (None: a new session) and last offset a connecting client brings back."""
    if socket.eio == 3:  # our extension: the handshake's query, as EIO3 has no CONNECT data
        query = socket.handshake.query
        pid, offset = query.get(EIO3_PID), query.get(EIO3_OFFSET)
    else:
        pid = auth.get("pid") if isinstance(auth, dict) else None
        offset = auth.get("offset") if isinstance(auth, dict) else None
    if isinstance(pid, str) and pid and pid != EIO3_OPT_IN:
        return pid, offset
    return None, None


async def _refusal(text: str) -> str:
    return text


def _forwarded_headers(payload: dict[str, Any]) -> dict[str, str]:
    auth = payload.get("auth")
    headers = auth.get("headers") if isinstance(auth, dict) else None
    if not headers or not isinstance(headers, dict):
        return {}  # Echo's usual `{"headers": {}}`: nothing to copy
    return {str(k): str(v) for k, v in headers.items() if v is not None}


def _subject(socket: Socket) -> str | None:
    claims = socket.state.claims if socket.state is not None else None
    if isinstance(claims, dict) and claims.get("sub") is not None:
        return f"sub:{claims['sub']}"
    return None


def returning_identity(socket: Socket) -> str | None:
    """Who a new connection is: its JWT subject, else the ``io`` cookie a browser
    sends back from its previous EIO3 session (that session's sid)."""
    subject = _subject(socket)
    if subject is not None:
        return subject
    for part in socket.handshake.headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "io" and value:
            return f"io:{value}"
    return None


def leaving_identities(socket: Socket) -> tuple[str, ...]:
    """What a reconnect of this client will show: its subject, or for EIO3 its sid,
    which the server handed out as the ``io`` cookie."""
    identities = [s for s in (_subject(socket),) if s is not None]
    if socket.session.eio == 3:
        identities.append(f"io:{socket.session.sid}")
    return tuple(identities)


class EchoSocketIo:
    """The ``SocketHandler`` of the Socket.IO layer: Echo's events to the channel core.

    With connection-state recovery on (``socketio.connectionStateRecovery``), Engine.IO 4
    sockets get a ``pid`` and offsets; a CONNECT that carries a ``pid`` (and the ``offset``
    of the last packet the client got) comes back as the same socket when the core can
    give it everything it missed (socket.io's protocol, §11 of docs' echo-protocol). An
    isolated app's sockets (``apps``: the one whose endpoint the handshake came to) do the
    same on their app's channels, through wires of their own, and only within their app,
    and within their app's bounds: its connections (``seats``, shared with its Pusher
    clients), channels and client events (the core's ``ConnectionBounds``)."""

    def __init__(self, core: ChannelCore, apps: SocketIoApps, seats: AppSeats,
                 on_app: Callable[[App], None] | None = None) -> None:
        self.core = core
        self.apps = apps
        self.seats = seats
        # An isolated app's connected sockets: the app each took its seat of.
        self._seated: dict[Socket, App] = {}
        recovery = core.sessions is not None
        self.wire = SocketIoWire()
        self.offsets_wire = SocketIoWire(offsets=True) if recovery else None
        self.isolated_wire = IsolatedAppWire()
        self.isolated_offsets_wire = IsolatedAppWire(offsets=True) if recovery else None
        self._recovering = frozenset(wire for wire in (self.offsets_wire,
                                                       self.isolated_offsets_wire) if wire)
        self._wires = self._recovering | {self.wire, self.isolated_wire}
        apps.on_change = self.follow
        # Told each isolated app that admits a socket (a database's: its webhooks start then).
        self.on_app = on_app

    def on_connect(self, socket: Socket, auth: Any) -> Any:
        handshake = socket.handshake
        try:
            app = self.apps.owner(handshake.path, handshake.headers)
        except NotServed:
            socket.state = ClientState(self.isolated_wire, handshake.address, handshake.headers)
            return _refusal("App not found")
        wire: Wire[Socket] = self.wire if app is None else self.isolated_wire
        recovering = self.offsets_wire if app is None else self.isolated_offsets_wire
        recovers = False
        if recovering is not None and (socket.eio == 4 or EIO3_PID in handshake.query):
            wire, recovers = recovering, True
        state = socket.state = ClientState(wire, handshake.address, handshake.headers)
        if app is not None:  # an isolated app's page: its own channels
            state.tag = app.tag
            if not app.enabled:
                return _refusal("App is disabled")
            state.bounds = self.apps.bounds(app.tag)
            if self.on_app is not None:
                self.on_app(app)
        deciding = self.core.authenticate(socket, lambda: TokenSources(
            connect_payload=auth, query=handshake.query, headers=handshake.headers))
        if recovers and self.core.shared is not None:
            pid, offset = _recovery_request(socket, auth)
            if pid is not None:  # its session may be another instance's
                deciding = self._prepare(socket, deciding, pid, offset)
        if app is None:
            return deciding
        if deciding is None:
            refusal = self._seat(socket, app)
            return None if refusal is None else _refusal(refusal)
        return self._seat_after(socket, app, deciding)

    async def _seat_after(self, socket: Socket, app: App,
                          deciding: Awaitable[str | None]) -> str | None:
        """The seat once the rest said yes, in the step in which the socket connects (the
        transport finishes the CONNECT in the step this returns): taken then, it is given
        back at the disconnect that must follow."""
        refusal = await deciding
        if refusal is not None or socket.session.closed:
            return refusal
        return self._seat(socket, app)

    def _seat(self, socket: Socket, app: App) -> str | None:
        """One of ``app``'s seats for ``socket`` (None), or why not (the CONNECT's refusal)."""
        address = socket.handshake.address
        refused = self.seats.take(app, address, self.core.limits.trusted)
        if refused is not None:
            self.core.report_error("bad_request", f"socket.io: {refused.message}")
            return refused.message
        self._seated[socket] = app
        return None

    def follow(self) -> None:
        """An endpoint changed hands, or its app was enabled or disabled (a reload, a
        NOTIFY): each open socket goes on if the endpoint it came through still leads to
        its app; is disconnected (``41``: socket.io-client does not reconnect, as pusher-js
        does not after 4003 or 4001) when that app is disabled or no longer there; and is
        closed as a dropped transport (it reconnects, as after Pusher's 4200) when the
        endpoint now leads to another app, whose channels it then joins."""
        closed: Counter[str] = Counter()
        for connection in list(self.core.connections.values()):
            if connection.state.wire not in self._wires:
                continue  # another protocol's
            socket: Socket = connection  # type: ignore[assignment]  # its wire says so
            handshake = socket.handshake
            try:
                app: App | None = self.apps.owner(handshake.path, handshake.headers)
            except NotServed:
                app = None
            tag = socket.state.tag
            if (app.tag if app is not None else "") == tag:
                if app is None:
                    continue
                if app.enabled:
                    if self.on_app is not None:
                        self.on_app(app)  # its row may have changed
                    continue  # its bounds changed in place (``SocketIoApps.bounds``)
                closed["disabled"] += 1
                socket.disconnect()
            elif app is None:
                closed["gone"] += 1
                socket.disconnect()
            else:
                closed["moved"] += 1
                socket.session.close("app changed")
        if closed:
            log.info("socket.io: sockets closed as their apps changed: %s",
                     ", ".join(f"{count} {why}" for why, count in sorted(closed.items())))

    async def _prepare(self, socket: Socket, authenticating: Awaitable[str | None] | None,
                       pid: str, offset: object) -> str | None:
        if authenticating is not None:
            refusal = await authenticating
            if refusal is not None:
                return refusal
        await self.core.prepare_recovery(socket, pid, offset)  # the last await
        return None

    def on_connected(self, socket: Socket, auth: Any) -> Callable[[], None] | None:
        then = None
        if socket.state.wire in self._recovering:
            then = self._resume(socket, auth)
        core = self.core
        # Who it is matters only to a listener (metrics' reconnection count): the cookie is
        # not parsed for nobody.
        identity = returning_identity(socket) if core.lifecycle.wants(ConnectionOpened) else None
        core.open(socket, socket.handshake.issued, identity)
        return then

    def _resume(self, socket: Socket, auth: Any) -> Callable[[], None] | None:
        """Recover the session the CONNECT names, if it can be whole; the socket's pid."""
        eio3 = socket.eio == 3
        pid, offset = _recovery_request(socket, auth)
        missed: list[Entry] = []
        recovered = False
        if pid is not None:
            try:
                parked = self.core.recover(socket, pid, offset)
            except RecoveryRefused:
                pass  # counted by the core; the client gets a new socket
            else:
                if not eio3:
                    socket.id = parked.connection_id  # Laravel's X-Socket-ID stays right
                missed = self.core.restore(socket, parked)
                recovered = True
        token = self.core.recoverable(socket)
        wire = socket.state.wire
        assert isinstance(wire, SocketIoWire)  # one of self._recovering
        if eio3:
            def tell_and_replay() -> None:
                # After its `40`: the session's pid, and whether it came back, for our kit.
                socket.emit(EIO3_EVENT, {"pid": token, "recovered": recovered})
                wire.replay(socket, missed)
            return tell_and_replay
        socket.pid = token
        return (lambda: wire.replay(socket, missed)) if missed else None

    def on_refused(self, socket: Socket, message: str) -> None:
        self.core.refused(socket, message)

    def on_event(self, socket: Socket, event: str, args: list[Any]) -> None:
        payload = args[0] if args else None
        if event == "subscribe":
            if isinstance(payload, dict):
                tag = socket.state.tag
                self.core.subscribe(socket, payload.get("channel"), _forwarded_headers(payload),
                                    self.apps.authorizer(tag) if tag else None)
            else:
                self.core.subscribe(socket, None, {})
        elif event == "unsubscribe":
            self.core.unsubscribe(socket, payload.get("channel")
                                  if isinstance(payload, dict) else None)
        elif event == "client event":
            if isinstance(payload, str):
                try:
                    payload = loads(payload)
                except ValueError:
                    payload = None
            if not isinstance(payload, dict):
                self.core.report_error("bad_client_event",
                                       f"malformed client event from {socket.id}")
                return
            # Its app's bounds may drop it: counted and logged, as socket.io has no answer.
            self.core.client_event(socket, payload.get("channel"), payload.get("event"),
                                   payload.get("data"))

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        core = self.core
        core.close(socket, reason, leaving_identities(socket)
                   if core.lifecycle.wants(ConnectionClosed) else ())
        if socket.state.tag:  # the default app's sockets hold no seat
            app = self._seated.pop(socket, None)
            if app is not None:
                self.seats.give(app, socket.handshake.address)
