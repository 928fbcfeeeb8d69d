"""The websocket at ``/app/{key}`` (Pusher protocol 7), on the HTTP side's port.

About 450 lines because a connection's whole Pusher life is here in order (its app found and
followed as the store changes, admitted within the app's bounds, its messages, its
keep-alive); the signatures, the wire and the connection are modules of their own.

It reuses the transport's websocket (framing, bounds, back-pressure) and hands channel work
to the core: a subscribe comes with its signature, checked here (``apps.SignatureAuthorizer``)
instead of asking the app; everything else (limits, presence, fan-out, whispers, lifecycle
events) is the core's, shared with Socket.IO clients on the same channels. Keep-alive is
Pusher's: messages, not control frames. Each connection waits in the transport's
``Deadlines`` for its next deadline (its ping, its pong's end, its sign-in's end), as an
Engine.IO session does for its heartbeat: no timer of its own, and no sweep over them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from channel_auth import ChannelAuthorizer
from channel_auth.rules import ChannelRule, RuleAuthorizer
from echo_common.jsoncodec import dumps, loads

from ...apps.authorizers import UntaggedAuthorizer, isolated_authorizer
from ...apps.model import App
from ...apps.seats import AppSeats
from ...apps.store import AppStore, AppsUnavailable
from ...core.channels import ChannelCore
from ...core.connection import ClientState, Wire
from ...core.limits import channel_name_problem
from ...core.names import USER_CHANNEL, is_presence, is_private
from ...transport.deadlines import Deadlines
from ...transport.engine import KEPT_HEADERS
from ...transport.guard import MAX_PAYLOAD, WRITE_HIGH_WATER
from ...transport.http import HttpConnection, Request, Response
from ...transport.ids import numeric_ids
from ...transport.websocket import encode_frame, switching_protocols, valid_key
from ...transport.wsconn import WebSocketConnection
from ..app_bounds import app_bounds
from ..presence_bounds import PresenceBounds
from .apps import SignatureAuthorizer, UserChannelAuthorizer, signed_in_user
from .connection import PusherConnection, SignInWait, message
from .wire import PusherWire

log = logging.getLogger("echo_server.pusher")
PREFIX = "/app/"
NO_SUCH_APP = 4001, "App key does not exist"  # 4000-4099: pusher-js does not reconnect
APP_DISABLED = 4003, "App is disabled"
# 4100-4199: pusher-js reconnects after a while; never 4001, which would stop it for good.
APPS_UNAVAILABLE = 4100, "Apps cannot be looked up right now: try again later"
HELD_BYTES = 64 * 1024  # subscribes held for a sign-in, in all, per connection
ErrorReporter = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class PusherOptions:
    activity_timeout: float = 30.0  # seconds of silence before the server pings
    pong_timeout: float = 30.0  # then this long for any answer, else 4201
    # With `jwt.required`, a Pusher connection must pusher:signin within this (seconds),
    # else 4009; 0: signing in is the client's choice.
    signin_timeout: float = 0.0
    max_payload: int = MAX_PAYLOAD
    write_high_water: int = WRITE_HIGH_WATER
    origin_allowed: Callable[[str | None], bool] = lambda origin: True


class PusherEndpoint:
    def __init__(self, core: ChannelCore, apps: AppStore, options: PusherOptions,
                 report_error: ErrorReporter, rules: list[ChannelRule] | None = None,
                 seats: AppSeats | None = None,
                 numeric: bool = True, on_app: Callable[[App], None] | None = None) -> None:
        self.core = core
        self.apps = apps
        self.rules: list[ChannelRule] = rules or []
        self.options = options
        self._report = report_error
        self.wire: Wire[PusherConnection] = PusherWire()
        self.connections: set[PusherConnection] = set()
        # Each app's maxConnections, shared with its Socket.IO pages.
        self.seats = seats or AppSeats()
        self.deadlines = Deadlines(self._check)
        self._lookups: set[asyncio.Task[None]] = set()
        # Told each app that admits a client (a database's: its webhooks start then).
        self.on_app = on_app
        numeric_ids(numeric)  # socket ids pusher-php-server accepts, for every client
        apps.watch(self.refresh)

    def reconfigure(self, rules: list[ChannelRule], numeric: bool,
                    origin_allowed: Callable[[str | None], bool], activity_timeout: float,
                    pong_timeout: float) -> None:
        """On reload: the local channel rules (`channels`) decide for signed-in users before
        any signature, as they do for JWT users on the socket.io side; socket ids are ones
        pusher-php-server accepts while any app may be a Pusher app; ``socketio.origins``
        holds for the upgrades from now on; the keep-alive's timeouts hold for the open
        connections at once, as an app's reloaded activity timeout does."""
        self.rules = rules
        numeric_ids(numeric)
        old = self.options
        self.options = replace(old, origin_allowed=origin_allowed,
                               activity_timeout=activity_timeout, pong_timeout=pong_timeout)
        if (activity_timeout, pong_timeout) != (old.activity_timeout, old.pong_timeout):
            now = time.monotonic()
            for connection in list(self.connections):
                self._check(connection, now)

    def refresh(self, keys: frozenset[str] | None) -> None:
        """The store says these apps changed (a reload, a NOTIFY; None: any): an open
        connection goes on under its app as it is now (its secret signs what it asks from
        now on: a rotated secret refuses the old one's signatures), and is closed with 4001
        when its app is gone, 4003 when it is disabled."""
        closed: Counter[int] = Counter()
        later: defaultdict[str, list[PusherConnection]] = defaultdict(list)
        for connection in list(self.connections):
            key = connection.app.key
            if keys is not None and key not in keys:
                continue
            found = self.apps.cached("key", key)
            if found is None:
                later[key].append(connection)
            else:
                closed[self._follow(connection, found[0] if found else None)] += 1
        _log_closed(closed)
        for key, connections in later.items():  # one lookup per app, not per connection
            self._keep(self._refresh_later(key, connections))

    async def _refresh_later(self, key: str, connections: list[PusherConnection]) -> None:
        try:
            app = await self.apps.by_key(key)
        except AppsUnavailable:
            return  # they keep their app as it was; the next change looks again
        _log_closed(Counter(self._follow(connection, app) for connection in connections
                            if connection in self.connections))

    def _follow(self, connection: PusherConnection, app: App | None) -> int:
        """0, or the code the connection was closed with."""
        if app is not None and app.tag != connection.state.tag:
            # Its key now names another app (a row's id changed): its channels are that
            # app's, so it starts again (4200: pusher-js reconnects at once).
            connection.error(4200, "The app changed: reconnect")
            connection.ws.close(4200)
            return 4200
        if app is not None and app.enabled and app.signs:
            if connection.app is not app:
                if self.on_app is not None:
                    self.on_app(app)
                connection.app = app
                connection.state.bounds = app_bounds(app)
                self._check(connection, time.monotonic())  # its activity timeout may be new
            return 0
        code, text = NO_SUCH_APP if app is None or not app.signs else APP_DISABLED
        connection.error(code, text)
        connection.ws.close(code)
        return code

    def _keep(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    @staticmethod
    def matches(path: str) -> bool:
        return path.startswith(PREFIX)

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self) -> None:
        self.deadlines.stop()
        for task in self._lookups:
            task.cancel()
        for connection in list(self.connections):
            connection.error(4200, "Server shutting down: reconnect")
            connection.ws.going_away()

    def by_kind(self) -> Counter[tuple[str, str]]:
        return Counter({("pusher", "websocket"): len(self.connections)})

    # -- the upgrade --------------------------------------------------------------------------
    def handle_upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None:
        transport = conn.transport
        assert transport is not None
        headers = request.headers
        key = headers.get("sec-websocket-key", "")
        if headers.get("upgrade", "").lower() != "websocket" or not valid_key(key):
            conn.refuse_upgrade(Response.text("Bad Request", 400))
            return
        if not self.options.origin_allowed(headers.get("origin")):
            conn.refuse_upgrade(Response.text("Forbidden", 403))
            return
        ws = WebSocketConnection(self, transport, self.options.max_payload,
                                 self.options.write_high_water)
        transport.set_protocol(ws)
        ws.on_lost = conn.upgraded_release()
        transport.write(switching_protocols(key))
        app_key = request.path[len(PREFIX):]
        found = self.apps.cached("key", app_key)
        if found is None:  # not in memory: the store asks its database, in a task
            self._keep(self._admit_later(ws, app_key, request, conn, rest))
            return
        self._admit(ws, found[0] if found else None, request, conn, rest)

    async def _admit_later(self, ws: WebSocketConnection, key: str, request: Request,
                           conn: HttpConnection, rest: bytes) -> None:
        try:
            app = await self.apps.by_key(key)
        except AppsUnavailable as error:
            self.report_error("apps", f"pusher: {error}")
            ws.write(_error_frame(*APPS_UNAVAILABLE))
            ws.close(APPS_UNAVAILABLE[0])
            return
        if not ws.closed:
            self._admit(ws, app, request, conn, rest)

    def _admit(self, ws: WebSocketConnection, app: App | None, request: Request,
               conn: HttpConnection, rest: bytes) -> None:
        headers = request.headers
        address = conn.client_address(request)
        refusal = self._refusal(app, headers.get("origin"), address)
        if refusal is not None:
            self.report_error("bad_request", f"pusher: {refusal[1]}")
            ws.write(_error_frame(*refusal))
            ws.close(refusal[0])  # 4000-4099: pusher-js does not reconnect
            return
        assert app is not None
        if self.on_app is not None:
            self.on_app(app)
        connection = PusherConnection(ws, app)
        connection.state = ClientState(self.wire, address,
                                       {k: headers[k] for k in KEPT_HEADERS if k in headers})
        connection.state.tag = app.tag  # its app's own channels
        connection.state.bounds = app_bounds(app)
        ws.session = connection
        self.connections.add(connection)
        opened = connection.last_seen
        if self.options.signin_timeout:
            connection.signin = SignInWait(opened + self.options.signin_timeout)
        self._check(connection, opened)  # schedules its first deadline
        self.core.open(connection, opened, None)
        connection.send("pusher:connection_established", None, dumps({
            "socket_id": connection.id,
            "activity_timeout": int(self._activity_timeout(app))}))
        if rest:
            ws.data_received(rest)

    def _refusal(self, app: App | None, origin: str | None,
                 address: str) -> tuple[int, str] | None:
        """Why the connection is refused, or None: then it holds one of its app's slots."""
        if app is None or not app.signs:  # an API client's key is no Pusher app
            return NO_SUCH_APP
        if not app.enabled:
            return APP_DISABLED
        if not app.origin_allowed(origin):
            return 4009, "Origin not allowed"
        refused = self.seats.take(app, address, self.core.limits.trusted)
        return None if refused is None else (refused.code, refused.message)

    def _activity_timeout(self, app: App) -> float:
        return app.activity_timeout or self.options.activity_timeout

    # -- WebSocketListener --------------------------------------------------------------------
    def report_error(self, kind: str, message: str, *args: object) -> None:
        self._report(kind, message % args if args else message)

    def on_ws_binary(self, ws: WebSocketConnection, data: bytes) -> None:
        self.report_error("bad_frame", "pusher: binary message")
        if isinstance(ws.session, PusherConnection):
            ws.session.error(None, "Binary messages are not supported")

    def on_ws_closed(self, ws: WebSocketConnection, reason: str) -> None:
        connection = ws.session
        if isinstance(connection, PusherConnection):
            ws.session = None
            self.connections.discard(connection)
            self.deadlines.cancel(connection)
            self.seats.give(connection.app, connection.state.address)
            self.core.close(connection, reason)

    def on_ws_text(self, ws: WebSocketConnection, text: str) -> None:
        connection = ws.session
        if not isinstance(connection, PusherConnection):
            return
        connection.last_seen = now = time.monotonic()
        if connection.pinged:  # answered: the next ping goes an activity timeout from now
            connection.pinged = False
            self.deadlines.schedule(connection, now + self._activity_timeout(connection.app))
        try:
            msg = loads(text)
        except ValueError:
            msg = None
        event = msg.get("event") if isinstance(msg, dict) else None
        if not isinstance(event, str):
            self.report_error("bad_frame", "pusher: a message that is not a Pusher event")
            connection.error(None, "Invalid message")
            return
        data = msg.get("data")
        if event == "pusher:ping":
            connection.send("pusher:pong", None, {})
        elif event == "pusher:pong":
            pass
        elif event == "pusher:subscribe":
            if connection.signin is not None:
                self._hold(connection, connection.signin, _object(data))
            else:
                self._subscribe(connection, _object(data))
        elif event == "pusher:unsubscribe":
            channel = _object(data).get("channel")
            wait = connection.signin
            if wait is not None and wait.held:
                wait.drop(channel)
            self.core.unsubscribe(connection, channel)
        elif event == "pusher:signin":
            self._signin(connection, _object(data))
        elif event.startswith("client-"):
            channel = msg.get("channel")
            if isinstance(channel, str) and channel.startswith("private-encrypted-"):
                # The server cannot read (nor so vouch for) what the backend encrypted.
                connection.error(None, "Client events are not allowed on encrypted channels")
            else:
                # Its app's enableClientMessages and maxClientEventsPerSecond: the core's.
                refused = self.core.client_event(connection, channel, event, data)
                if refused is not None:
                    connection.error(4301, refused)
        else:
            self.report_error("bad_frame", "pusher: an event this server does not handle")
            connection.error(None, f"Unsupported event {event[:64]!r}")

    def _subscribe(self, connection: PusherConnection, data: dict[str, Any]) -> None:
        channel = data.get("channel")
        authorizer: ChannelAuthorizer | None = None
        app = connection.app
        if isinstance(channel, str) and channel.startswith(USER_CHANNEL):
            authorizer = UserChannelAuthorizer(connection.state.user)
            if app.tag:
                authorizer = UntaggedAuthorizer(authorizer)
        elif isinstance(channel, str) and is_private(channel):
            authorizer = SignatureAuthorizer(connection, data.get("auth"),
                                             data.get("channel_data"))
            # The top-level `channels` are the default app's; an isolated app has its own.
            if app.tag:
                authorizer = isolated_authorizer(app, authorizer)
            elif self.rules:
                authorizer = RuleAuthorizer(self.rules, authorizer)
        if authorizer is not None and isinstance(channel, str) and is_presence(channel):
            # Whoever decided, the member is within the app's bounds.
            authorizer = PresenceBounds(authorizer, lambda: connection.app.limits,
                                        self.core.presence)
        self.core.subscribe(connection, channel, {}, authorizer, pusher_names=True)

    def _hold(self, connection: PusherConnection, wait: SignInWait,
              data: dict[str, Any]) -> None:
        """With `jwt.required`, nothing reaches a connection before it signs in: a subscribe
        waits for the sign-in (then it is made, in order), or for the sign-in timeout (then
        the connection closes with it). Not refused: pusher-js subscribes as soon as it is
        connected, and signs in only after its round trip to /broadcasting/user-auth, so a
        page's subscribes nearly always come first, and pusher-js never repeats a refused
        one. Bounded: a few subscribes' worth of text, as many as authorizations may be in
        flight."""
        channel = data.get("channel")
        limits = self.core.limits
        if not isinstance(channel, str) or channel_name_problem(
                channel, limits.max_channel_name, pusher=True) is not None:
            self._subscribe(connection, data)  # refused at once, as always
            return
        held = {"channel": channel, "auth": data.get("auth"),
                "channel_data": data.get("channel_data")}
        if len(wait.held) < limits.max_pending_auth:  # the count first: it costs nothing
            size = len(dumps(held))
            if wait.size + size <= HELD_BYTES:
                wait.hold(held, size)
                return
        self.report_error("rate_limited", f"pusher: {connection.id} has subscribes "
                          "waiting for its sign-in already")
        self.wire.refused(connection, channel, 429)

    def _signin(self, connection: PusherConnection, data: dict[str, Any]) -> None:
        user_data = data.get("user_data")
        user = signed_in_user(connection.app, connection.id, data.get("auth"), user_data)
        if user is None:
            self.report_error("auth_failed", "pusher: sign-in with a bad signature")
            connection.error(4009, "Invalid user authentication signature")
            return
        connection.state.user = user
        if connection.state.claims is None:  # what the local channel rules read
            connection.state.claims = {**_object(user_data), "sub": user}
        connection.send("pusher:signin_success", None, {"user_data": user_data})
        wait, connection.signin = connection.signin, None
        for held in wait.held if wait is not None else ():
            self._subscribe(connection, held)

    # -- keep-alive -------------------------------------------------------------------------------
    def _check(self, connection: PusherConnection, now: float) -> None:
        """Whatever is due for ``connection`` at ``now`` (the end of its time to sign in, a
        ping after its app's activity timeout, the end of the ping's time to be answered),
        then when to look again: its earliest deadline. A message from the client only
        writes when it was seen, and the look at the old deadline finds nothing due; only
        the answer to a ping moves the look earlier (to the next ping, before the pong's
        end)."""
        if connection.ws.closed:
            return
        wait = connection.signin
        if wait is not None and now >= wait.deadline:
            connection.error(4009, "Connection is unauthorized: sign in first")
            connection.ws.close(4009)
            return
        due = connection.last_seen + self._activity_timeout(connection.app)
        if connection.pinged:
            due += self.options.pong_timeout
            if now >= due:
                connection.error(4201, "Pong reply not received in time")
                connection.ws.close(4201)
                return
        elif now >= due:
            connection.pinged = True
            connection.send("pusher:ping", None, {})
            due += self.options.pong_timeout
        if wait is not None:
            due = min(due, wait.deadline)
        self.deadlines.schedule(connection, due)


def _log_closed(closed: Counter[int]) -> None:
    for code, what in ((NO_SUCH_APP[0], "a removed app"), (APP_DISABLED[0], "a disabled app")):
        if closed[code]:
            log.warning("%d Pusher connection(s) of %s closed with %d", closed[code], what, code)


def _object(data: Any) -> dict[str, Any]:
    """pusher-js sends ``data`` as an object; some clients as a JSON string."""
    if isinstance(data, str):
        try:
            data = loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def _error_frame(code: int, text: str) -> bytes:
    return encode_frame(message("pusher:error", None, {"code": code, "message": text}))
