"""The smallest honest third protocol: server-sent events, server to client only.

``GET /sse?channel=leads-management`` answers ``text/event-stream`` and stays open; every
event on that public channel (of the default app) comes as ``event: <name>`` and
``data: <the event's JSON>``. It plugs in as any protocol does (echo_server/adapters/
protocols.py): ``served`` builds its declaration from an ``Assembly``, and one line registers
it (``protocols=(*PROTOCOLS, sse_adapter.served)`` in the test; an entry of
``adapters/registry.py`` in the server). ``server.py`` knows nothing of it.

Its connections are ordinary core connections with their own ``Wire``, so fan-out hands it
each event once, and it builds one frame for all its recipients, as the other wires do.
Bounded like them: the HTTP guard bounds connections per address, the core bounds
subscriptions, and a reader that lets ``MAX_BUFFERED`` bytes pile up is dropped. A browser's
``EventSource`` sends its page's Origin: ``socketio.origins`` holds here too, and a reload's
new list reaches it through the ``reconfigure`` it declares.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from echo_server.adapters.protocols import Assembly, Route, Served, Settings
from echo_server.core.channels import ChannelCore
from echo_server.core.connection import ClientState, Item, Wire
from echo_server.core.limits import channel_name_problem
from echo_server.core.names import is_private
from echo_server.transport.http import HttpConnection, Request, Response, RouteResult

PATH = "/sse"
MAX_BUFFERED = 1 << 20
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\n\r\n")


class SseClient:
    __slots__ = ("conn", "id", "state")

    def __init__(self, conn: HttpConnection, wire: Wire[SseClient], request: Request) -> None:
        self.conn = conn
        self.id = "sse-" + secrets.token_hex(8)
        self.state = ClientState(wire, conn.client_address(request), request.headers)


class SseWire:
    """The per-connection writer: one frame per event, written to each member."""

    def __init__(self) -> None:
        self.frames = 0  # built, for the test's "once per event, whatever the recipients"

    def send(self, members: Collection[SseClient], channel: str, event: str,
             data_json: str | bytes, offset: int | str, exclude: SseClient | None) -> int:
        if "\n" in event or "\r" in event:
            return 0  # would break the framing; no Laravel event is named so
        data = data_json if isinstance(data_json, bytes) else data_json.encode("utf-8")
        frame = b"event: " + event.encode("utf-8") + b"\ndata: " + data + b"\n\n"
        self.frames += 1
        sent = 0
        for client in members:
            if client is not exclude and self._write(client, frame):
                sent += 1
        return sent

    def send_batch(self, batch: Sequence[Item[SseClient]]) -> int:
        return sum(self.send(*item) for item in batch)

    def subscribed(self, connection: SseClient, channel: str,
                   members: list[dict[str, Any]] | None) -> None:
        self._write(connection, b": subscribed\n\n")

    def cache_miss(self, connection: SseClient, channel: str) -> None:
        return None

    def refused(self, connection: SseClient, channel: str, status: int) -> None:
        self._write(connection, b"event: error\ndata: {\"status\":%d}\n\n" % status)
        self.disconnect(connection, "refused")

    def disconnect(self, connection: SseClient, reason: str) -> None:
        transport = connection.conn.transport
        if transport is not None:
            transport.close()  # the connection's on_close closes it in the core

    def gone(self, connection: SseClient) -> bool:
        return connection.conn.closed

    def _write(self, client: SseClient, frame: bytes) -> bool:
        transport = client.conn.transport
        if transport is None or client.conn.closed:
            return False
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            transport.abort()  # a reader this far behind is dropped, not buffered for
            return False
        transport.write(frame)
        return True


class SseEndpoint:
    def __init__(self, core: ChannelCore, origin_allowed: Callable[[str | None], bool]) -> None:
        self.core = core
        self.origin_allowed = origin_allowed
        self.wire = SseWire()
        self.checked: Wire[SseClient] = self.wire  # it is the core's Wire, as mypy checks
        self.clients: set[SseClient] = set()

    @staticmethod
    def matches(path: str) -> bool:
        return path == PATH

    def handle(self, request: Request, conn: HttpConnection) -> RouteResult:
        if request.method != "GET":
            return Response.text("Method Not Allowed", 405)
        if not self.origin_allowed(request.headers.get("origin")):
            return Response.text("Forbidden", 403)
        channel = request.query.get("channel", "")
        problem = channel_name_problem(channel, self.core.limits.max_channel_name)
        if problem is not None:
            return Response.text(problem, 400)
        if is_private(channel):
            return Response.text("public channels only", 403)
        transport = conn.transport
        if transport is None:
            return None
        client = SseClient(conn, self.wire, request)
        transport.write(HEAD)
        self.clients.add(client)
        conn.on_close = lambda _conn: self._closed(client)
        self.core.open(client, time.monotonic(), None)
        self.core.subscribe(client, channel, {})
        return None  # held: the stream is the answer

    def _closed(self, client: SseClient) -> None:
        self.clients.discard(client)
        self.core.close(client, "transport close")

    def stop(self) -> None:
        for client in list(self.clients):
            self.wire.disconnect(client, "server shutting down")

    def connections(self) -> Counter[tuple[str, str]]:
        return Counter({("sse", "http"): len(self.clients)})

    def reconfigure(self, settings: Settings) -> Callable[[], None]:
        allowed = settings.origin_allowed

        def apply() -> None:
            self.origin_allowed = allowed

        return apply


def served(assembly: Assembly) -> Served:
    endpoint = SseEndpoint(assembly.core, assembly.settings.origin_allowed)
    return Served("sse", routes=(Route(endpoint.matches, endpoint.handle),),
                  stop=endpoint.stop, reconfigure=endpoint.reconfigure,
                  connections=endpoint.connections, parts=(endpoint,))
