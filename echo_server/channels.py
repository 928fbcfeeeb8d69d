"""Laravel Echo's channel semantics on top of Socket.IO sockets.

``subscribe``, ``unsubscribe`` and ``client event`` behave as in
laravel-echo-server 1.6.3 (see docs/compatibility.md), including its
unanchored name rules, minus its crashes: every malformed payload, every
disconnect at any moment (during a pending authorization, after a 403, twice)
is handled, logged at a bounded rate and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from broadcaster.jsoncodec import dumps, loads
from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer

from .hub import Hub
from .rooms import Rooms
from .transport.sockets import Socket

log = logging.getLogger("echo_server.channels")

ErrorReporter = Callable[[str, str], None]


def is_private(channel: str) -> bool:
    """Private or presence: the reference matches ``/private-.*/`` and
    ``/presence-.*/`` anywhere in the name (``orders.private-notes`` needs auth)."""
    return "private-" in channel or "presence-" in channel


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def is_client_event(event: str) -> bool:
    return "client-" in event


def _channel_of(payload: Any) -> str | None:
    if isinstance(payload, dict):
        channel = payload.get("channel")
        if isinstance(channel, str) and channel:
            return channel
    return None


def _forwarded_headers(payload: dict[str, Any]) -> dict[str, str]:
    auth = payload.get("auth")
    headers = auth.get("headers") if isinstance(auth, dict) else None
    if not isinstance(headers, dict):
        return {}
    return {str(k): str(v) for k, v in headers.items() if v is not None}


class ChannelHandler:
    """The ``SocketHandler`` of the Socket.IO layer."""

    def __init__(self, rooms: Rooms, hub: Hub, authorizer: ChannelAuthorizer,
                 report_error: ErrorReporter, *, whisper_max_bytes: int = 10_000,
                 whisper_rate: float = 10.0) -> None:
        self.rooms = rooms
        self.hub = hub
        self.authorizer = authorizer
        self.report_error = report_error
        self.whisper_max_bytes = whisper_max_bytes
        self.whisper_rate = whisper_rate
        self.on_joined: Callable[[Socket, str, AuthResult | None], None] | None = None

    # -- SocketHandler ----------------------------------------------------------
    def on_connect(self, socket: Socket, auth: Any) -> None:
        return None

    def on_event(self, socket: Socket, event: str, args: list[Any]) -> None:
        payload = args[0] if args else None
        if event == "subscribe":
            self.subscribe(socket, payload)
        elif event == "unsubscribe":
            self.unsubscribe(socket, payload)
        elif event == "client event":
            self.client_event(socket, payload)

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        pending = self._pending(socket, create=False)
        if pending:
            for task in pending.values():
                task.cancel()
            pending.clear()
        self.rooms.leave_all(socket)

    # -- events -----------------------------------------------------------------
    def subscribe(self, socket: Socket, payload: Any) -> None:
        channel = _channel_of(payload)
        if channel is None:
            self.report_error("bad_subscribe", f"subscribe without a channel from {socket.id}")
            return
        if not is_private(channel):
            if self.rooms.join(channel, socket) and log.isEnabledFor(logging.DEBUG):
                log.debug("%s joined %s", socket.id, channel)
            return
        pending = self._pending(socket, create=True)
        previous = pending.pop(channel, None)
        if previous is not None:
            previous.cancel()
        request = AuthRequest(
            channel=channel,
            socket_id=socket.id,
            headers=_forwarded_headers(payload),
            handshake_headers=socket.handshake.headers,
            claims=(socket.data or {}).get("claims"),
        )
        task = asyncio.ensure_future(self._authorize(socket, request))
        pending[channel] = task
        task.add_done_callback(lambda t: pending.pop(channel, None) if pending.get(channel) is t
                               else None)

    async def _authorize(self, socket: Socket, request: AuthRequest) -> None:
        try:
            result = await self.authorizer.authorize(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("channel authorization of %r failed", request.channel)
            result = AuthResult(0)
        if not socket.connected:
            return
        if not result.allowed:
            self.report_error("auth_failed", f"{request.channel}: status {result.status}")
            socket.emit("subscription_error", request.channel, result.status)
            return
        self.rooms.join(request.channel, socket)
        log.debug("%s joined %s (authorized)", socket.id, request.channel)
        if self.on_joined is not None:
            self.on_joined(socket, request.channel, result)

    def unsubscribe(self, socket: Socket, payload: Any) -> None:
        channel = _channel_of(payload)
        if channel is None:
            self.report_error("bad_subscribe", f"unsubscribe without a channel from {socket.id}")
            return
        pending = self._pending(socket, create=False)
        if pending and channel in pending:
            pending.pop(channel).cancel()
        if self.rooms.leave(channel, socket):
            log.debug("%s left %s", socket.id, channel)

    def client_event(self, socket: Socket, payload: Any) -> None:
        if isinstance(payload, str):
            try:
                payload = loads(payload)
            except ValueError:
                payload = None
        if not isinstance(payload, dict):
            self.report_error("bad_client_event", f"malformed client event from {socket.id}")
            return
        event, channel = payload.get("event"), payload.get("channel")
        if not (isinstance(event, str) and isinstance(channel, str) and is_client_event(event)
                and is_private(channel) and self.rooms.contains(channel, socket)):
            return  # the reference drops these silently; so do we (not an error)
        data = dumps(payload.get("data"))
        if len(data) > self.whisper_max_bytes:
            self.report_error("oversized", f"client event of {len(data)} bytes dropped")
            return
        if not self._take_whisper_token(socket):
            self.report_error("rate_limited", f"client events from {socket.id} over the limit")
            return
        self.hub.emit_to_room(channel, event, data, except_id=socket.id)

    # -- per-socket state -----------------------------------------------------------
    @staticmethod
    def _pending(socket: Socket, create: bool) -> dict[str, asyncio.Future[None]] | None:
        data = socket.data
        if data is None:
            if not create:
                return None
            data = socket.data = {}
        pending = data.get("pending")
        if pending is None and create:
            pending = data["pending"] = {}
        return pending

    def _take_whisper_token(self, socket: Socket) -> bool:
        """Token bucket: ``whisper_rate`` per second, bursts of the same size."""
        if self.whisper_rate <= 0:
            return True
        data = socket.data if socket.data is not None else {}
        socket.data = data
        now = time.monotonic()
        tokens, last = data.get("whisper_bucket", (self.whisper_rate, now))
        tokens = min(self.whisper_rate, tokens + (now - last) * self.whisper_rate)
        if tokens < 1.0:
            data["whisper_bucket"] = (tokens, now)
            return False
        data["whisper_bucket"] = (tokens - 1.0, now)
        return True
