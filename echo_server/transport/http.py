"""A bare HTTP/1.1 connection on ``asyncio.Protocol`` + httptools.

Everything on port 6001 arrives here: Engine.IO polling, websocket upgrades
and the small HTTP API. A connection is routed by path as soon as its request
line is parsed, and a websocket hands its socket over to a lighter protocol
object (``transport.set_protocol``), so an idle websocket keeps no HTTP parser.

Over 500 lines: the parser callbacks, the deadlines, the back-pressure and the lingering
close make up one state machine per connection, and the request it hands over (its headers
read only on demand) belongs with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import NoReturn, cast

import httptools

from .deadlines import Bucket
from .guard import TRANSPORT_HIGH_WATER, ConnectionGuard

log = logging.getLogger("echo_server.http")


def parse_query(query: str) -> dict[str, str]:
    """``dict(parse_qsl(query, keep_blank_values=True))``, at a fifth of the cost for the
    usual ``EIO=4&transport=websocket``: only parts with ``%`` or ``+`` are unquoted."""
    found: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name = urllib.parse.unquote_plus(name)
            value = urllib.parse.unquote_plus(value)
        found[name] = value
    return found


@dataclass(slots=True)
class Request:
    """One parsed request. Its headers stay the parser's bytes until something reads
    ``headers`` (a publish to an API never does): names lowered and repeats joined then."""

    method: str
    path: str
    query_string: str
    raw_headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    keep_alive: bool = True
    _headers: dict[str, str] | None = field(default=None, repr=False)
    _query: dict[str, str] | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = header_dict(self.raw_headers)
        return headers

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = parse_query(self.query_string)
        return self._query


def header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Names lowered; a repeated header's values joined as one (cookies with ``; ``)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        if key in headers:
            headers[key] += ("; " if key == "cookie" else ", ") + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")
    return headers


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/html; charset=utf-8"
    # Set by ``prebuilt``: the bytes on the wire, (closing, keep-alive), encoded once.
    wire: tuple[bytes, bytes] | None = None

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
             headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, text.encode("utf-8"), headers or [], content_type)

    @classmethod
    def prebuilt(cls, status: int, body: bytes, headers: list[tuple[str, str]],
                 content_type: str) -> Response:
        """An answer given again and again (an API's ``{}``): encoded here, once, and
        shared, so never changed afterwards."""
        response = cls(status, body, headers, content_type)
        response.wire = (encode_response(response, False), encode_response(response, True))
        return response


def encode_response(response: Response, keep_alive: bool) -> bytes:
    wire = response.wire
    if wire is not None:
        return wire[keep_alive]
    reason = _REASONS.get(response.status, "Unknown")
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines.append(f"Content-Type: {response.content_type}")
    lines.append(f"Content-Length: {len(response.body)}")
    for name, value in response.headers:
        lines.append(f"{name}: {value}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + response.body


_REASONS = {s.value: s.phrase for s in HTTPStatus}

# What a route answers: a response now, a response later, or None when the
# handler keeps the request and answers it itself (a held long-poll).
RouteResult = Response | Awaitable[Response] | None
Handler = Callable[[Request, "HttpConnection"], RouteResult]
UpgradeHandler = Callable[[Request, "HttpConnection", bytes], None]


class HttpConnection(asyncio.Protocol):
    """One TCP connection speaking HTTP/1.1 until (maybe) it becomes a websocket.

    Bounded as docs/limits.md says: requests parsed ahead of the one being answered wait
    in ``_pending`` (at most ``max_pipeline``; reading stops while any wait), responses
    stop being produced while the transport's write buffer is over its high-water mark,
    and each phase of a request has its deadline. Errors are answered in order, after the
    responses owed to earlier requests.
    """

    __slots__ = (
        "_body", "_body_size", "_busy", "_header_bytes", "_header_names", "_headers", "_parser",
        "_peer", "_pending", "_phase", "_reading_paused", "_refusal", "_url", "_write_paused",
        "closed", "deadline", "due", "due_slot", "guard", "handler", "on_close", "transport",
        "upgrade_handler",
    )

    def __init__(self, handler: Handler, upgrade_handler: UpgradeHandler,
                 guard: ConnectionGuard) -> None:
        self.handler = handler
        self.upgrade_handler = upgrade_handler
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_names: set[str] | None = None  # only past max_headers lines
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending: deque[Request | Response] = deque()  # pipelined, in order
        self._busy = False  # a request is being answered (or held)
        self._phase = _IDLE
        self._refusal: Response | None = None
        self._reading_paused = False
        self._write_paused = False
        self._peer: str | None = None
        self.closed = False
        self.deadline = 0.0
        self.due: Bucket | None = None  # where the guard's Deadlines hold it
        self.due_slot = 0
        self.on_close: Callable[[HttpConnection], None] | None = None

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's protocol: its transport is a stream's (uvloop's is no subclass).
        self.transport = stream = cast(asyncio.Transport, transport)
        guard = self.guard
        limits = guard.limits
        if limits.write_high_water != TRANSPORT_HIGH_WATER:
            stream.set_write_buffer_limits(high=limits.write_high_water)
        if guard.max_per_address and not guard.admit(self.peer):
            # Closed at once, without lingering: an address over its bound gets no
            # connection held for it, not even for the linger.
            self._peer = None  # not counted: nothing to release
            stream.write(encode_response(Response.text("Service Unavailable", 503), False))
            self._close()
            return
        self.deadline = time.monotonic() + limits.header_timeout
        guard.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._forget()
        # Break the connection <-> parser cycle and drop what was queued now, not at the
        # next cyclic collection (which the server runs rarely).
        self._parser = None
        self._pending.clear()
        self._body = []
        callback = self.on_close
        if callback is not None:
            self.on_close = None
            callback(self)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            if self._phase == _LINGER:
                self._discard(len(data))
            return  # refused or upgraded: nothing more is read as HTTP
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgrade(data[offset:])
        except httptools.HttpParserError:
            refusal = self._refusal or Response.text("Bad Request", 400)
            self._refusal = None
            self._refuse(refusal)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._phase != _LINGER:  # a lingering connection keeps reading, and its deadline
            self._pause_reading()
            self.deadline = time.monotonic() + self.guard.limits.body_timeout

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._phase == _LINGER:
            return
        self.deadline = 0.0
        if not self._busy:
            self._next()

    def timed_out(self) -> None:
        """Past the deadline of the current phase: a stalled reader is cut off, a request
        that does not arrive in time gets a 408, an idle keep-alive connection is closed, and
        a lingering close ends."""
        if self._phase == _LINGER:
            self._end_linger()
            return
        if self.closed:
            return
        if self._write_paused:
            self.guard.report("timeout", "HTTP client stopped reading its responses")
            self._forget()
            if self.transport is not None:
                self.transport.abort()
        elif self._phase != _IDLE:
            phase = "headers" if self._phase == _HEAD else "body"
            self.guard.report("timeout", f"HTTP request {phase} not received in time")
            if self._busy:
                self._close()
            else:
                self._write_and_close(Response.text("Request Timeout", 408))
        else:
            self._close()

    # -- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_names = None
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._phase = _HEAD
        self.deadline = time.monotonic() + self.guard.limits.header_timeout
        if self._busy or self._pending:
            # Pipelined behind a request still being answered (a held poll): what is already
            # read is parsed, nothing more is read until the answer goes out.
            self._pause_reading()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.guard.limits.max_header_bytes:
            self._refuse_parsing("uri_too_long", 414, "URI Too Long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Kept as the parser's bytes: decoded only if the request's handler reads them.
        headers = self._headers
        headers.append((name, value))
        limits = self.guard.limits
        size = self._header_bytes = self._header_bytes + len(name) + len(value)
        if size > limits.max_header_bytes or (
                len(headers) > limits.max_headers and self._too_many_names(limits.max_headers)):
            self._refuse_parsing("headers_too_large", 431, "Request Header Fields Too Large")

    def _too_many_names(self, most: int) -> bool:
        """Past ``max_headers`` lines: whether past ``max_headers`` names, since the lines
        of a repeated name join into one header. The names are gathered once, then kept."""
        names = self._header_names
        if names is None:
            names = self._header_names = {
                name.decode("latin-1").lower() for name, _ in self._headers}
        else:
            names.add(self._headers[-1][0].decode("latin-1").lower())
        return len(names) > most

    def on_body(self, body: bytes) -> None:
        # No on_headers_complete callback (one Python call less per request): the body's
        # deadline starts with its first bytes; until then the headers' one still runs.
        if self._phase != _BODY:
            self._phase = _BODY
            self.deadline = time.monotonic() + self.guard.limits.body_timeout
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > self.guard.limits.max_body:
            self._refuse_parsing("oversized", 413, "Request Entity Too Large")

    def on_message_complete(self) -> None:
        parser = self._parser
        if parser is None or parser.should_upgrade():
            return  # llhttp pauses right after this; data_received takes the upgrade
        self._phase = _IDLE
        self.deadline = 0.0
        request = self._make_request()
        request.body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        if not self._busy and not self._pending and not self._write_paused:
            self._dispatch(request)
            return
        if len(self._pending) >= self.guard.limits.max_pipeline:
            self._refuse_parsing("pipelining", 503, "Service Unavailable")
        self._pending.append(request)
        self._pause_reading()

    # -- internals ----------------------------------------------------------
    @property
    def peer(self) -> str:
        """The TCP peer's address, looked up once and only when something needs it."""
        peer = self._peer
        if peer is None:
            info = self.transport.get_extra_info("peername") if self.transport else None
            peer = self._peer = str(info[0]) if isinstance(info, tuple) and info else ""
        return peer

    def client_address(self, request: Request) -> str:
        """The client's address, through trusted proxies (``trustedProxies``)."""
        return self.guard.proxies.client(self.peer, request.headers.get("x-forwarded-for"))

    def _make_request(self) -> Request:
        parser = self._parser
        assert parser is not None
        try:
            parsed = httptools.parse_url(self._url)
        except httptools.HttpParserError:
            self._refuse_parsing("bad_request", 400, "Bad Request")
        path = parsed.path.decode("latin-1") if parsed.path else "/"
        if "%" in path:
            path = urllib.parse.unquote(path)
        query = parsed.query.decode("latin-1") if parsed.query else ""
        return Request(parser.get_method().decode("ascii"), path, query, self._headers,
                       b"", parser.should_keep_alive())

    def _dispatch(self, request: Request) -> None:
        self._busy = True
        try:
            result = self.handler(request, self)
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.path)
            result = Response.text("Internal Server Error", 500)
        if result is None:
            return  # held: the handler answers through respond()
        if isinstance(result, Response):
            self.respond(result, request.keep_alive)
            return
        task = asyncio.ensure_future(result)
        task.add_done_callback(lambda t: self._finish_async(t, request))

    def _finish_async(self, task: asyncio.Future[Response], request: Request) -> None:
        if task.cancelled():
            response = Response.text("Service Unavailable", 503)
        elif task.exception() is not None:
            exc = task.exception()
            log.error("unhandled error answering %s %s", request.method, request.path,
                      exc_info=exc)
            response = Response.text("Internal Server Error", 500)
        else:
            response = task.result()
        self.respond(response, request.keep_alive)

    def respond(self, response: Response, keep_alive: bool = True) -> None:
        """Answer the current request, then move on to any pipelined one."""
        if self.closed or self.transport is None:
            return
        self.transport.write(encode_response(response, keep_alive))
        self._busy = False
        if not keep_alive:
            self._close()
            return
        if not self._write_paused:
            self._next()

    def _next(self) -> None:
        """The next pipelined request (or refusal), else wait for one within keep-alive."""
        if self._pending:
            item = self._pending.popleft()
            if isinstance(item, Response):
                self._write_and_close(item)
            else:
                self._dispatch(item)
            return
        if self._reading_paused and self._parser is not None:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        if self._phase == _IDLE:
            self.deadline = time.monotonic() + self.guard.limits.keep_alive_timeout

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _refuse_parsing(self, kind: str, status: int, message: str) -> NoReturn:
        """Inside a parser callback: stop parsing this connection, answer ``status``."""
        self.guard.report(kind, f"HTTP request refused with {status} {message}")
        self._refusal = Response.text(message, status)
        raise _Refused(message)

    def _refuse(self, response: Response) -> None:
        """No more input is read; the refusal goes out after what is owed to earlier
        requests, and closes the connection."""
        self._parser = None
        self._phase = _IDLE
        if self._busy or self._pending:
            self._pending.append(response)
            self._pause_reading()
        else:
            self._write_and_close(response)

    def _upgrade(self, rest: bytes) -> None:
        parser = self._parser
        if self._busy or self._pending or parser is None or parser.get_method() == b"CONNECT":
            self._refuse(Response.text("Bad Request", 400))
            return
        try:
            request = self._make_request()
        except _Refused:
            refusal, self._refusal = self._refusal, None
            self._refuse(refusal or Response.text("Bad Request", 400))
            return
        self._parser = None  # the socket is no longer HTTP
        self.deadline = 0.0
        self.guard.forget(self)
        self.upgrade_handler(request, self, rest)

    def refuse_upgrade(self, response: Response) -> None:
        """An upgrade handler's no (before it took the socket over): the answer, then the
        connection closes."""
        self._write_and_close(response)

    def upgraded_release(self) -> Callable[[], None] | None:
        """What the websocket that takes this socket over calls when it closes, so the
        address keeps its connection counted until then."""
        peer = self._peer
        if peer is None or not self.guard.max_per_address:
            return None
        self._peer = None  # released by the websocket now, not by this object
        guard = self.guard
        return lambda: guard.release(peer)

    # -- lingering close (RFC 9112 §9.6) ---------------------------------------------
    def _write_and_close(self, response: Response) -> None:
        """A refusal, then a lingering close. Closed at once while its client is still
        sending (the rest of an oversized body, a pipelined request), a connection is reset
        by the kernel, and the client may never read the answer (Node's fetch reports EPIPE
        or ECONNRESET). So the sending side is shut down after the answer, what still
        arrives is read and thrown away, and the connection closes when the client closes
        its side, or after ``linger_timeout`` or ``linger_bytes``, whichever comes first."""
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(encode_response(response, False))
        limits = self.guard.limits
        self.closed = True  # nothing more is written
        self._parser = None
        self._pending.clear()
        self._body = []
        self._body_size = 0  # now what was thrown away
        self._phase = _LINGER
        self.deadline = time.monotonic() + limits.linger_timeout
        if self.due is None:  # out of the schedule: a refused upgrade, or the look that
            self.guard.watch(self)  # timed it out. The address keeps it counted till it ends.
        if transport.can_write_eof():  # not TLS: the client reads the answer to Content-Length
            transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _discard(self, size: int) -> None:
        self._body_size += size
        if self._body_size > self.guard.limits.linger_bytes:
            self._end_linger()

    def _end_linger(self) -> None:
        """Past the linger's time or bytes: the answer had its chance; what is still
        unsent or unread goes with an abort (a close would wait for the client to read)."""
        self._phase = _IDLE
        self._forget()
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        self._forget()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _forget(self) -> None:
        self.deadline = 0.0
        guard = self.guard
        guard.forget(self)
        if guard.max_per_address and self._peer is not None:
            guard.release(self._peer)
            self._peer = None


_IDLE, _HEAD, _BODY, _LINGER = 0, 1, 2, 3


class _Refused(Exception):
    pass
