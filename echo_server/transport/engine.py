"""Engine.IO server for protocols 3 (socket.io-client 2.x) and 4 (3.x/4.x).

One ``Session`` per client whatever its transport. The generations differ in
the open packet, the heartbeat direction (EIO3: the client pings; EIO4: the
server pings), polling framing and the Socket.IO handshake; everything else is
shared. Timers are not per session: each session waits in the bucket of its next
deadline (``deadlines.Deadlines``), one loop timer for them all, so an idle connection
owns no timer and is looked at when its deadline comes, not up to a period later.

About 600 lines: both generations' sessions, polling and websocket paths share one
``Session`` type and one schedule. Split apart, each half would reach into the other's state.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from echo_common.jsoncodec import dumps

from .deadlines import Bucket, Deadlines
from .guard import MAX_PAYLOAD, WRITE_HIGH_WATER
from .http import HttpConnection, Request, Response, RouteResult
from .ids import new_id
from .packets import (
    PacketError,
    decode_binary_payload_v3,
    decode_payload_v3,
    decode_payload_v4,
    encode_payload_v3,
    encode_payload_v4,
    jsonp_post_data,
    jsonp_script,
)
from .websocket import switching_protocols, text_frame, valid_key
from .wsconn import SLICE, WebSocketConnection, release_held

log = logging.getLogger("echo_server.engine")

# The handshake headers kept for the session's lifetime: what channel
# authorization and metrics need, not the whole request (memory per socket).
MAX_QUEUED_PACKETS = 10_000  # per polling session, between two of its GETs

# Between an EIO3 websocket's 101 and its open packet: the time a client gets to read the
# 101 alone. Sent together, four Node clients in five read both at once; 2 ms apart, a few
# in a thousand still did on this loaded 2-core machine (uvloop counts whole milliseconds,
# so its 2 ms can be 1); 5 ms apart, none of 1,000. Released up to 1 ms early with others
# due then (a ``Deadlines``' bucket is a millisecond), so 6 here: at least 5.
OPEN_PACKET_GAP = 0.006

KEPT_HEADERS = ("cookie", "referer", "origin", "authorization", "user-agent",
                "x-forwarded-for", "host")


@dataclass(slots=True)
class EngineOptions:
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    upgrade_timeout: float = 10.0
    connect_timeout: float = 45.0
    max_payload: int = MAX_PAYLOAD
    transports: tuple[str, ...] = ("polling", "websocket")
    allow_upgrades: bool = True
    write_high_water: int = WRITE_HIGH_WATER
    cookie: bool = True
    origin_allowed: Callable[[str | None], bool] = field(default=lambda origin: True)
    # Then, at a handshake (a new session), the say of whoever serves its path and Host
    # (an isolated app's own allow-list): (path, headers, Origin or Referer) -> allowed.
    owner_origin_allowed: Callable[[str, dict[str, str], str | None], bool] | None = None


@dataclass(slots=True)
class Handshake:
    headers: dict[str, str]
    query: dict[str, str]
    issued: float
    # The client's address (through trusted proxies): a polling session answers only
    # requests from it, and the per-address bounds count by it.
    address: str = ""
    # The path it was opened at: the server may serve Socket.IO at several (one per app).
    path: str = ""


class EngineListener(Protocol):
    """The Socket.IO layer, seen from the engine."""

    def on_open(self, session: Session) -> None: ...
    def on_message(self, session: Session, text: str) -> None: ...
    def on_binary(self, session: Session, data: bytes) -> None: ...
    def on_close(self, session: Session, reason: str) -> None: ...


def _error(code: int, message: str, status: int = 400) -> Response:
    return Response(status, dumps({"code": code, "message": message}).encode(), [],
                    "application/json")


UNKNOWN_TRANSPORT = (0, "Transport unknown")
UNKNOWN_SID = (1, "Session ID unknown")
BAD_HANDSHAKE_METHOD = (2, "Bad handshake method")
BAD_REQUEST = (3, "Bad request")
FORBIDDEN = (4, "Forbidden")


class Session:
    """One Engine.IO client: its transport, heartbeat state and outgoing queue."""

    __slots__ = (
        "awaiting_pong", "closed", "due", "due_slot", "eio", "ending", "engine",
        "flush_pending", "handshake", "last_ping", "last_seen", "poll", "poll_request",
        "probe", "probe_ok", "probe_since", "queue", "sid", "socket", "ws",
    )
    # last_ping: when the current ping cycle began (EIO4): the last ping sent, or the pong
    # that answered it (the next ping goes pingInterval after that).

    def __init__(self, engine: EngineServer, sid: str, eio: int, handshake: Handshake) -> None:
        self.engine = engine
        self.sid = sid
        self.eio = eio
        self.handshake = handshake
        self.ws: WebSocketConnection | None = None
        self.probe: WebSocketConnection | None = None
        self.probe_ok = False
        self.probe_since = 0.0
        self.poll: HttpConnection | None = None  # the held GET, if any
        self.poll_request: Request | None = None
        self.queue: list[str] = []
        self.flush_pending = False
        now = time.monotonic()
        self.last_seen = now
        self.last_ping = now
        self.awaiting_pong = False
        self.closed = False
        self.ending: str | None = None  # close after the next GET (see end())
        self.socket: object = None  # set by the Socket.IO layer
        self.due: Bucket | None = None  # where the engine's Deadlines hold it
        self.due_slot = 0

    @property
    def transport_name(self) -> str:
        return "websocket" if self.ws is not None else "polling"

    # -- sending ------------------------------------------------------------
    def send(self, packet: str) -> None:
        ws = self.ws
        if ws is not None:
            ws.write(text_frame(packet))
        elif not self.closed:
            self._enqueue(packet)

    def send_prebuilt(self, packet: str, frame: bytes) -> None:
        """Fan-out path: the websocket frame was built once for every recipient."""
        ws = self.ws
        if ws is not None:
            ws.write(frame)
        elif not self.closed:
            self._enqueue(packet)

    def _enqueue(self, packet: str) -> None:
        """Polling (or upgrading) clients: queued for their next GET, within a bound, so a
        client that stops polling cannot grow memory until its heartbeat times out."""
        queue = self.queue
        if len(queue) >= MAX_QUEUED_PACKETS:
            # Closed on the next loop turn, not here: this may run inside a fan-out loop.
            self.queue = []
            self.engine.report_error("slow_client", "polling client %s let %d packets queue "
                                     "up: dropping it", self.sid, MAX_QUEUED_PACKETS)
            asyncio.get_running_loop().call_soon(self.close, "slow client")
            return
        queue.append(packet)
        if self.poll is not None and not self.flush_pending:
            self.flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush_poll)

    def flush_poll(self) -> None:
        """Answer the held GET with everything queued (events of one batch go together)."""
        self.flush_pending = False
        conn, request = self.poll, self.poll_request
        if conn is None or request is None or not self.queue:
            return
        self.poll = self.poll_request = None
        conn.on_close = None
        packets, self.queue = self.queue, []
        conn.respond(self.engine.poll_response(self, request, packets), request.keep_alive)

    # -- receiving ------------------------------------------------------------
    def on_packet(self, packet: str) -> None:
        self.last_seen = time.monotonic()
        kind = packet[:1]
        if kind == "4":
            self.engine.listener.on_message(self, packet[1:])
        elif kind == "2":
            if self.eio == 3 or packet == "2probe":
                self.send("3" + packet[1:])
            else:
                # Engine.IO 4 heartbeats run from the server; engine.io closes a client
                # that pings ("invalid heartbeat direction").
                self.engine.report_error("bad_frame", "engine: ping from an EIO4 client")
                self.close("transport error")
        elif kind == "3":
            if self.eio == 4:
                # The next ping goes pingInterval after this pong, as engine.io's does. Its
                # check is moved only when that is sooner than the pong's timeout (a
                # pingInterval shorter than pingTimeout); otherwise this is a no-op.
                self.awaiting_pong = False
                self.last_ping = now = self.last_seen
                engine = self.engine
                engine.deadlines.schedule(self, now + engine.options.ping_interval)
        elif kind == "1":
            # The client is leaving: end its pending GET with a noop, as engine.io
            # does, rather than a close packet it did not ask for.
            self._answer_poll_with_noop()
            self.close("client close")
        elif kind == "6":
            pass
        elif kind == "5":
            pass  # an upgrade packet on the current transport: harmless, ignore
        elif kind == "b" and (self.eio == 4 or packet[1:2] == "4"):
            # A binary message over polling travels base64-encoded: `b<base64>` in EIO4,
            # `b4<base64>` in EIO3 (the message's packet type, then its data).
            try:
                data = base64.b64decode(packet[1 if self.eio == 4 else 2:], validate=True)
            except ValueError:
                self.engine.report_error("bad_frame", "engine: bad base64 binary packet")
                return
            self.engine.listener.on_binary(self, data)
        else:
            self.engine.report_error("bad_frame", "engine: unknown packet %r", packet[:20])
            self.close("parse error")

    def on_probe_packet(self, ws: WebSocketConnection, packet: str) -> None:
        if packet == "2probe":
            ws.write(text_frame("3probe"))
            self.probe_ok = True
            self._answer_poll_with_noop()
        elif packet == "5" and self.probe_ok:
            self.ws, self.probe = ws, None
            self._answer_poll_with_noop()
            queued, self.queue = self.queue, []
            for packet_text in queued:
                ws.write(text_frame(packet_text))
            self.last_seen = time.monotonic()
        else:
            self.drop_probe()

    def drop_probe(self) -> None:
        """Abandon an upgrade that did not finish. ``probe_ok`` goes too: left set,
        every GET would be answered at once with a noop, a busy loop of polls."""
        probe, self.probe = self.probe, None
        self.probe_ok = False
        if probe is not None:
            probe.session = None
            probe.close()

    def _answer_poll_with_noop(self) -> None:
        conn, request = self.poll, self.poll_request
        if conn is not None and request is not None:
            self.poll = self.poll_request = None
            conn.on_close = None
            conn.respond(self.engine.poll_response(self, request, ["6"]), request.keep_alive)

    # -- closing -------------------------------------------------------------
    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.engine.sessions.pop(self.sid, None)
        self.engine.deadlines.cancel(self)
        ws, self.ws = self.ws, None
        probe, self.probe = self.probe, None
        if ws is not None:
            ws.session = None
            ws.close()
        if probe is not None:
            probe.session = None
            probe.close()
        conn, request = self.poll, self.poll_request
        if conn is not None and request is not None:
            # What was queued last (a refusal's error packet) goes out before the close.
            self.poll = self.poll_request = None
            conn.on_close = None
            conn.respond(self.engine.poll_response(self, request, [*self.queue, "1"]),
                         request.keep_alive)
        self.queue = []
        self.engine.listener.on_close(self, reason)

    def end(self, reason: str) -> None:
        """Close once what is queued has reached the client: a polling client between
        two GETs gets its last packets (say, why it was refused) on its next one."""
        if self.ws is None and self.poll is None and self.queue and not self.closed:
            self.ending = reason
        else:
            self.close(reason)


class EngineServer:
    """Answers ``/socket.io/`` requests and owns every session."""

    def __init__(self, options: EngineOptions, listener: EngineListener,
                 error_reporter: Callable[[str, str], None] | None = None) -> None:
        self.options = options
        self.listener = listener
        self.sessions: dict[str, Session] = {}
        self.deadlines = Deadlines(self._check)
        # EIO3 websockets' open packets, each held OPEN_PACKET_GAP after its 101.
        self.first_writes = Deadlines(release_held)
        self._error_reporter = error_reporter

    # -- lifecycle ------------------------------------------------------------
    def stop(self) -> None:
        self.deadlines.stop()
        self.first_writes.stop(fire_pending=True)  # open packets before the closes

    def allow_origins(self, allowed: Callable[[str | None], bool]) -> None:
        """A reload's ``socketio.origins``: for the requests and upgrades from now on."""
        self.options.origin_allowed = allowed

    def sessions_by_kind(self) -> Counter[tuple[str, str]]:
        """(protocol, transport) -> sessions, e.g. ("eio3", "websocket")."""
        return Counter((f"eio{s.eio}", s.transport_name) for s in self.sessions.values())

    def close_all(self, reason: str = "server shutting down") -> None:
        for session in list(self.sessions.values()):
            ws = session.ws
            if ws is not None:
                ws.going_away()  # 1001: clients reconnect elsewhere; closes the session too
            session.close(reason)

    def _check(self, session: Session, now: float) -> None:
        """Whatever is due for ``session`` at ``now`` (a ping, a timeout, the end of an
        upgrade probe), then when to look again: its earliest deadline."""
        if session.closed:
            return
        opts = self.options
        probe_end = session.probe_since + opts.upgrade_timeout
        if session.probe is not None and now >= probe_end:
            session.drop_probe()
        if session.eio == 3:
            due = session.last_seen + opts.ping_interval + opts.ping_timeout
            if now >= due:
                session.close("ping timeout")
                return
        else:
            if session.awaiting_pong:
                due = session.last_ping + opts.ping_timeout
                if now >= due:
                    session.close("ping timeout")
                    return
            else:
                due = session.last_ping + opts.ping_interval
                if now >= due:
                    session.last_ping = now
                    session.awaiting_pong = True
                    session.send("2")
                    due = now + opts.ping_timeout
            if not getattr(session.socket, "connected", False):  # None: not yet made
                connect_end = session.handshake.issued + opts.connect_timeout
                if now >= connect_end:
                    session.close("connect timeout")
                    return
                due = min(due, connect_end)
        if session.probe is not None:
            due = min(due, probe_end)
        self.deadlines.schedule(session, due)

    # -- errors ---------------------------------------------------------------
    def report_error(self, kind: str, message: str, *args: object) -> None:
        """Bad input from a client: the reporter counts it and rate-limits the log."""
        text = message % args if args else message
        if self._error_reporter is not None:
            self._error_reporter(kind, text)
        else:
            log.warning("%s: %s", kind, text)

    # -- HTTP -----------------------------------------------------------------
    def cors_headers(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        if origin:
            return [("Access-Control-Allow-Origin", origin),
                    ("Access-Control-Allow-Credentials", "true")]
        return [("Access-Control-Allow-Origin", "*")]

    def poll_response(self, session: Session, request: Request, packets: list[str]) -> Response:
        payload = encode_payload_v3(packets) if session.eio == 3 else encode_payload_v4(packets)
        headers = self.cors_headers(request)
        jsonp = request.query.get("j")
        if jsonp is not None and session.eio == 3:
            return Response(200, jsonp_script(jsonp, payload).encode("utf-8"), headers,
                            "text/javascript; charset=UTF-8")
        return Response(200, payload.encode("utf-8"), headers, "text/plain; charset=UTF-8")

    def _reject(self, request: Request, error: tuple[int, str], status: int = 400) -> Response:
        response = _error(*error, status=status)
        if error is not FORBIDDEN:
            response.headers.extend(self.cors_headers(request))
        return response

    def handle_request(self, request: Request, conn: HttpConnection) -> RouteResult:
        """An HTTP request to the Engine.IO path (polling, or a bad upgrade)."""
        query = request.query
        transport = query.get("transport")
        if transport not in self.options.transports:
            return self._reject(request, UNKNOWN_TRANSPORT)
        if not self.options.origin_allowed(_origin_of(request)):
            return self._reject(request, FORBIDDEN, 403)
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            return self._preflight(request)
        sid = query.get("sid")
        if sid is None:
            if not self._owner_allows(request):
                return self._reject(request, FORBIDDEN, 403)
            if transport != "polling":
                return self._reject(request, BAD_REQUEST)
            if request.method != "GET":
                return self._reject(request, BAD_HANDSHAKE_METHOD)
            return self._handshake_polling(request, conn)
        session = self.sessions.get(sid)
        if session is None or not self._same_client(session, request, conn):
            return self._reject(request, UNKNOWN_SID)
        if transport != "polling" or session.ws is not None:
            return self._reject(request, BAD_REQUEST)
        if request.method == "GET":
            return self._poll(session, request, conn)
        if request.method == "POST":
            return self._post(session, request)
        return self._reject(request, BAD_REQUEST)

    def _owner_allows(self, request: Request) -> bool:
        """A new session's origin, by whoever serves its path (``socketio.origins`` said yes
        already, at every request)."""
        allowed = self.options.owner_origin_allowed
        return allowed is None or allowed(request.path, request.headers, _origin_of(request))

    def _preflight(self, request: Request) -> Response:
        headers = self.cors_headers(request)
        headers.append(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"))
        wanted = request.headers.get("access-control-request-headers")
        if wanted:
            headers.append(("Access-Control-Allow-Headers", wanted))
        return Response(204, b"", headers)

    def _same_client(self, session: Session, request: Request, conn: HttpConnection) -> bool:
        """A sid travels in URLs and, for EIO3, in every toOthers broadcast as the socket
        id: knowing it must not let another client read or write that session."""
        return conn.client_address(request) == session.handshake.address

    def _new_session(self, request: Request, eio: int, conn: HttpConnection) -> Session:
        sid = new_id()
        headers = request.headers
        kept = {k: headers[k] for k in KEPT_HEADERS if k in headers}
        query = {k: v for k, v in request.query.items()
                 if k not in ("EIO", "transport", "t", "sid", "b64", "j")}
        session = Session(self, sid, eio, Handshake(kept, query, time.monotonic(),
                                                    conn.client_address(request), request.path))
        self.sessions[sid] = session
        self._check(session, session.last_seen)  # schedules its first deadline
        return session

    def _open_packet(self, session: Session, upgrades: list[str]) -> str:
        opts = self.options
        data: dict[str, object] = {
            "sid": session.sid,
            "upgrades": upgrades,
            "pingInterval": int(opts.ping_interval * 1000),
            "pingTimeout": int(opts.ping_timeout * 1000),
        }
        if session.eio == 4:
            data["maxPayload"] = opts.max_payload
        return "0" + dumps(data)

    def _handshake_polling(self, request: Request, conn: HttpConnection) -> Response:
        session = self._new_session(request, _eio_of(request), conn)
        opts = self.options
        upgrades = ["websocket"] if opts.allow_upgrades and "websocket" in opts.transports else []
        session.queue.append(self._open_packet(session, upgrades))
        self.listener.on_open(session)
        packets, session.queue = session.queue, []
        response = self.poll_response(session, request, packets)
        if session.eio == 3 and self.options.cookie:
            response.headers.append(
                ("Set-Cookie", f"io={session.sid}; Path=/; HttpOnly; SameSite=Strict"))
        return response

    def _poll(self, session: Session, request: Request, conn: HttpConnection) -> Response | None:
        if session.poll is not None:
            # engine.io: the session ends, and this GET gets a bare 500.
            self.report_error("bad_request", "engine: overlapping polls from one client")
            session.close("transport error")
            return Response(500, b"", [], "text/plain")
        session.last_seen = time.monotonic()
        if session.ending is not None:
            packets, session.queue = [*session.queue, "1"], []
            response = self.poll_response(session, request, packets)
            session.close(session.ending)
            return response
        if session.queue:
            packets, session.queue = session.queue, []
            return self.poll_response(session, request, packets)
        if session.probe_ok:
            return self.poll_response(session, request, ["6"])
        session.poll, session.poll_request = conn, request

        def dropped(_conn: HttpConnection, session: Session = session) -> None:
            if session.poll is _conn:
                session.poll = session.poll_request = None

        conn.on_close = dropped
        return None

    def _post(self, session: Session, request: Request) -> Response | Awaitable[Response]:
        body = request.body
        if len(body) > self.options.max_payload:
            self.report_error("oversized", "engine: polling payload of %d bytes", len(body))
            session.close("transport error")
            return self._reject(request, BAD_REQUEST, 413)
        try:
            if request.query.get("j") is not None:
                packets = decode_payload_v3(jsonp_post_data(body))
            elif session.eio == 3:
                if request.headers.get("content-type", "").startswith("application/octet-stream"):
                    packets = decode_binary_payload_v3(body)
                else:
                    packets = decode_payload_v3(body.decode("utf-8"))
            else:
                packets = decode_payload_v4(body.decode("utf-8"))
        except (PacketError, UnicodeDecodeError) as exc:
            self.report_error("bad_frame", "engine: bad polling payload: %s", exc)
            session.close("parse error")
            return self._reject(request, BAD_REQUEST)
        ok = Response(200, b"ok", self.cors_headers(request), "text/html; charset=UTF-8")
        if len(packets) > SLICE:
            return _in_slices(session, packets, ok)
        for packet in packets:
            if session.closed:
                break
            session.on_packet(packet)
        return ok

    # -- websocket ---------------------------------------------------------------
    def handle_upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None:
        transport = conn.transport
        assert transport is not None
        headers = request.headers
        query = request.query

        if query.get("transport") != "websocket" or "websocket" not in self.options.transports:
            return conn.refuse_upgrade(self._reject(request, UNKNOWN_TRANSPORT))
        key = headers.get("sec-websocket-key", "")
        if headers.get("upgrade", "").lower() != "websocket" or not valid_key(key):
            return conn.refuse_upgrade(self._reject(request, BAD_REQUEST))
        if not self.options.origin_allowed(_origin_of(request)):
            return conn.refuse_upgrade(self._reject(request, FORBIDDEN, 403))
        sid = query.get("sid")
        session = None
        if sid is None and not self._owner_allows(request):
            return conn.refuse_upgrade(self._reject(request, FORBIDDEN, 403))
        if sid is not None:
            if not self.options.allow_upgrades:
                return conn.refuse_upgrade(self._reject(request, BAD_REQUEST))
            session = self.sessions.get(sid)
            if session is None or not self._same_client(session, request, conn):
                return conn.refuse_upgrade(self._reject(request, UNKNOWN_SID))
            if session.ws is not None or session.probe is not None:
                return conn.refuse_upgrade(self._reject(request, BAD_REQUEST))
        handshake = switching_protocols(key)
        ws = WebSocketConnection(self, transport, self.options.max_payload,
                                 self.options.write_high_water)
        transport.set_protocol(ws)
        ws.on_lost = conn.upgraded_release()
        if session is None:
            session = self._new_session(request, _eio_of(request), conn)
            ws.session = session
            # Packets sent while the socket layer opens (EIO3's `40`) are queued as for
            # polling, then go out right after the open packet.
            session.queue.append(self._open_packet(session, []))
            self.listener.on_open(session)
            opening, session.queue = session.queue, []
            frames = b"".join(text_frame(p) for p in opening)
            if session.closed:  # refused while opening: the error packet, then the close
                transport.write(handshake + frames)
                ws.close()
            else:
                if session.eio == 3:
                    # EIO3's open and connect packets in a write of their own, just after
                    # the 101: a client that reads the 101 alone fires `open` before any
                    # message, so a listener attached once `open` has fired (Node's `ws`,
                    # the engine.io v3 suite) still gets them. Read in one go, `ws` emits
                    # the message in the tick that follows `open`. (EIO4 sends them
                    # together: docs/compatibility.md says why.)
                    transport.write(handshake)
                    self.first_writes.schedule(ws.hold_writes(frames),
                                               time.monotonic() + OPEN_PACKET_GAP)
                else:
                    transport.write(handshake + frames)
                session.ws = ws
        else:
            transport.write(handshake)
            ws.session = session
            session.probe = ws
            session.probe_ok = False
            session.probe_since = time.monotonic()
            self.deadlines.schedule(session, session.probe_since + self.options.upgrade_timeout)
        if rest:
            ws.data_received(rest)

    def on_ws_text(self, ws: WebSocketConnection, text: str) -> None:
        session = ws.session
        if session is None:
            return
        if session.ws is ws:
            session.on_packet(text)
        elif session.probe is ws:
            session.on_probe_packet(ws, text)

    def on_ws_binary(self, ws: WebSocketConnection, data: bytes) -> None:
        session = ws.session
        if session is not None and session.ws is ws:
            session.last_seen = time.monotonic()
            # EIO3 prefixes binary messages with the packet type byte.
            self.listener.on_binary(session, data[1:] if session.eio == 3 else data)

    def on_ws_closed(self, ws: WebSocketConnection, reason: str) -> None:
        session = ws.session
        if session is None:
            return
        ws.session = None
        if session.ws is ws:
            session.ws = None
            session.close(reason)
        elif session.probe is ws:
            session.probe = None
            session.probe_ok = False


async def _in_slices(session: Session, packets: list[str], answer: Response) -> Response:
    """A polling payload of many packets, handled as a websocket's messages are: a slice per
    turn of the event loop, serving the other clients in between; answered after the last."""
    for start in range(0, len(packets), SLICE):
        for packet in packets[start:start + SLICE]:
            if session.closed:
                return answer
            session.on_packet(packet)
        await asyncio.sleep(0)
    return answer


def _origin_of(request: Request) -> str | None:
    # socket.io 2 checks `origin || referer`: a page's Referer stands in for a
    # missing Origin (same-origin GETs, older browsers), so the allow-list holds.
    headers = request.headers
    return headers.get("origin") or headers.get("referer")


def _eio_of(request: Request) -> int:
    # The reference ignores EIO and answers everything as protocol 3; so do we,
    # except for clients that say they speak 4.
    return 4 if request.query.get("EIO") == "4" else 3
