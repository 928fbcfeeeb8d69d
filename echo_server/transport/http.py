"""A bare HTTP/1.1 connection on ``asyncio.Protocol`` + httptools.

Everything on port 6001 arrives here: Engine.IO polling, websocket upgrades
and the small HTTP API. A connection is routed by path as soon as its request
line is parsed, and a websocket hands its socket over to a lighter protocol
object (``transport.set_protocol``), so an idle websocket keeps no HTTP parser.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

log = logging.getLogger("echo_server.http")

MAX_HEADER_BYTES = 64 * 1024


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
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True
    _query: dict[str, str] | None = field(default=None, repr=False)

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = parse_query(self.query_string)
        return self._query

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/html; charset=utf-8"

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
             headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, text.encode("utf-8"), headers or [], content_type)


def encode_response(response: Response, keep_alive: bool) -> bytes:
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
    """One TCP connection speaking HTTP/1.1 until (maybe) it becomes a websocket."""

    __slots__ = (
        "_body", "_busy", "_header_bytes", "_headers", "_parser", "_pending", "_too_large", "_url",
        "closed", "handler", "max_body", "on_close", "transport", "upgrade_handler",
    )

    def __init__(self, handler: Handler, upgrade_handler: UpgradeHandler, max_body: int) -> None:
        self.handler = handler
        self.upgrade_handler = upgrade_handler
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._pending: list[Request] = []  # pipelined requests waiting their turn
        self._busy = False  # a request is being answered (or held)
        self._too_large = False
        self.closed = False
        self.on_close: Callable[[HttpConnection], None] | None = None

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        callback = self.on_close
        if callback is not None:
            self.on_close = None
            callback(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgrade(data[offset:])
        except httptools.HttpParserError:
            if self._too_large:
                self._fail(413, "Request Entity Too Large")
            else:
                self._fail(400, "Bad Request")

    # -- httptools callbacks ------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEADER_BYTES:
            self._too_large = True
            raise _RequestTooLarge("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._too_large = True
            raise _RequestTooLarge("headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self._headers:
            sep = "; " if key == "cookie" else ", "
            self._headers[key] += sep + text
        else:
            self._headers[key] = text

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if sum(map(len, self._body)) > self.max_body:
            self._too_large = True
            raise _RequestTooLarge("request body too large")

    def on_message_complete(self) -> None:
        if self._parser.should_upgrade():
            return  # llhttp pauses right after this; data_received takes the upgrade
        request = self._make_request()
        request.body = b"".join(self._body)
        self._body = []
        if self._busy:
            self._pending.append(request)
        else:
            self._dispatch(request)

    # -- internals ----------------------------------------------------------
    def _make_request(self) -> Request:
        parsed = httptools.parse_url(self._url)
        path = urllib.parse.unquote(parsed.path.decode("latin-1")) if parsed.path else "/"
        query = parsed.query.decode("latin-1") if parsed.query else ""
        return Request(
            method=self._parser.get_method().decode("ascii"),
            path=path,
            query_string=query,
            headers=self._headers,
            keep_alive=self._parser.should_keep_alive(),
        )

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
            self.closed = True
            self.transport.close()
            return
        if self._pending:
            self._dispatch(self._pending.pop(0))

    def _upgrade(self, rest: bytes) -> None:
        request = self._make_request()
        self._parser = None  # type: ignore[assignment]  # free it: the socket is no longer HTTP
        self.upgrade_handler(request, self, rest)

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(encode_response(Response.text(message, status), False))
            self.closed = True
            self.transport.close()


class _RequestTooLarge(Exception):
    pass
