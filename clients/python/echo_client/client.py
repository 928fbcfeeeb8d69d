"""An async Laravel Echo client for Python, on python-socketio's ``AsyncClient``.

It speaks to echo-server (or laravel-echo-server with Engine.IO 4) exactly as laravel-echo
does in a browser, so a Python service can listen to the events the Laravel app broadcasts,
join presence channels and whisper, and our own tests can drive the server without Node:

    async with EchoClient("http://127.0.0.1:6001", token=jwt) as echo:
        echo.channel("leads-management").listen(".lead.assigned", on_assigned)
        echo.private("admin-dashboard.5").listen(".lead.assigned", on_mine)
        echo.join("leads-management").here(print).joining(print).leaving(print)

What it does like Echo: the same wire events (``subscribe``/``unsubscribe`` with
``auth.headers``, ``client event`` for whispers), the same event-name rules (a leading dot means
"as broadcast", otherwise the ``App.Events`` namespace is prefixed), ``private('x')`` is
``private-x``, ``leave('x')`` leaves ``x``, ``private-x`` and ``presence-x``. Where it does
better: every channel is subscribed again after *every* reconnection (Echo 1.x with
socket.io-client 4 does not), a server-side disconnect (a token that expired) is retried with
backoff instead of ending the connection for good, and ``set_token()`` hands the next
connection a new handshake token.

python-socketio's client speaks Engine.IO 4 only; echo-server serves it on the same port.

Just over 400 lines: Echo's channel kinds and the connection's life (auth, reconnects,
recovery) in one module, as in Echo's own connector.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import socketio

log = logging.getLogger("echo_client")

Callback = Callable[..., Any]

PRIVATE = "private-"
PRESENCE = "presence-"


def format_event(event: str, namespace: str | None) -> str:
    """Echo's EventFormatter: ``.lead.assigned`` is taken as broadcast (``broadcastAs``);
    ``LeadAssigned`` becomes ``App\\Events\\LeadAssigned`` with the default namespace."""
    if event[:1] in (".", "\\"):
        return event[1:]
    if namespace:
        event = f"{namespace}.{event}"
    return event.replace(".", "\\")


async def _call(callback: Callback, *args: Any) -> None:
    """Run a listener, sync or async; its failure is logged, never breaks the others."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("echo_client: a listener for %r failed", args[:1])


class Channel:
    """A public channel; ``listen`` returns the channel so calls chain as in Echo."""

    def __init__(self, client: EchoClient, name: str) -> None:
        self.client = client
        self.name = name
        self._listeners: dict[str, list[Callback]] = {}
        self._errors: list[Callback] = []

    def listen(self, event: str, callback: Callback) -> Self:
        key = format_event(event, self.client.namespace)
        self._listeners.setdefault(key, []).append(callback)
        return self

    def stop_listening(self, event: str, callback: Callback | None = None) -> Self:
        key = format_event(event, self.client.namespace)
        if callback is None:
            self._listeners.pop(key, None)
        else:
            remaining = [cb for cb in self._listeners.get(key, []) if cb is not callback]
            if remaining:
                self._listeners[key] = remaining
            else:
                self._listeners.pop(key, None)
        return self

    def error(self, callback: Callback) -> Self:
        """``callback(status)`` when the server refuses the subscription (the HTTP status of
        the app's ``/broadcasting/auth``, 0 when it could not be asked). Echo cannot do this:
        its socket.io channels ignore ``subscription_error``."""
        self._errors.append(callback)
        return self

    def notification(self, callback: Callback) -> Self:
        return self.listen(".Illuminate\\Notifications\\Events\\BroadcastNotificationCreated",
                           callback)

    async def _dispatch(self, event: str, args: list[Any]) -> None:
        if event == "subscription_error":
            status = args[0] if args else None
            for callback in list(self._errors):
                await _call(callback, status)
            return
        for callback in list(self._listeners.get(event, ())):
            await _call(callback, args[0] if args else None)


class PrivateChannel(Channel):
    """``private-<name>``: authorized by the app; whispers reach the other subscribers."""

    def whisper(self, event: str, data: Any) -> Self:
        self.client._emit_soon("client event", {"channel": self.name,
                                                "event": f"client-{event}", "data": data})
        return self

    def listen_for_whisper(self, event: str, callback: Callback) -> Self:
        return self.listen(f".client-{event}", callback)

    def stop_listening_for_whisper(self, event: str, callback: Callback | None = None) -> Self:
        return self.stop_listening(f".client-{event}", callback)


class PresenceChannel(PrivateChannel):
    """``presence-<name>``: ``here`` gets every member (again after each resubscription),
    ``joining``/``leaving`` one; members are what the app's ``user_info`` says."""

    def __init__(self, client: EchoClient, name: str) -> None:
        super().__init__(client, name)
        self._members: dict[str, Any] = {}
        self._here: list[Callback] = []
        self._joining: list[Callback] = []
        self._leaving: list[Callback] = []

    @property
    def members(self) -> list[Any]:
        return list(self._members.values())

    def here(self, callback: Callback) -> Self:
        self._here.append(callback)
        return self

    def joining(self, callback: Callback) -> Self:
        self._joining.append(callback)
        return self

    def leaving(self, callback: Callback) -> Self:
        self._leaving.append(callback)
        return self

    @staticmethod
    def _key(member: Any) -> str:
        user_id = member.get("user_id") if isinstance(member, dict) else None
        return str(user_id)

    async def _dispatch(self, event: str, args: list[Any]) -> None:
        payload = args[0] if args else None
        if event == "presence:subscribed":
            members = payload if isinstance(payload, list) else []
            self._members = {self._key(m): m.get("user_info") for m in members
                             if isinstance(m, dict)}
            for callback in list(self._here):
                await _call(callback, self.members)
        elif event == "presence:joining" and isinstance(payload, dict):
            self._members[self._key(payload)] = payload.get("user_info")
            for callback in list(self._joining):
                await _call(callback, payload.get("user_info"))
        elif event == "presence:leaving" and isinstance(payload, dict):
            self._members.pop(self._key(payload), None)
            for callback in list(self._leaving):
                await _call(callback, payload.get("user_info"))
        else:
            await super()._dispatch(event, args)


class _RecoveringClient(socketio.AsyncClient):
    """python-socketio keeps only ``sid`` of the CONNECT reply; socket.io 4.6's recovery also
    needs ``pid`` (its own client has no such support yet), so the reply goes to the owner
    too."""

    def __init__(self, on_connect_data: Callable[[Any], None], **options: Any) -> None:
        super().__init__(**options)
        self._on_connect_data = on_connect_data

    async def _handle_connect(self, namespace: Any, data: Any) -> None:
        self._on_connect_data(data)
        await super()._handle_connect(namespace, data)


class EchoClient:
    """One connection to echo-server and the channels on it.

    ``token`` is the handshake token (sent in the Socket.IO connect payload, where echo-server
    looks first) and, with ``bearer=True``, also ``Authorization: Bearer`` in the headers every
    subscribe carries to the app's ``/broadcasting/auth``. ``auth_headers`` adds headers there
    (e.g. a session ``Cookie`` or ``X-CSRF-TOKEN``); ``headers`` go on the handshake itself.
    """

    def __init__(self, url: str, *, token: str | None = None,
                 auth_headers: Mapping[str, str] | None = None, bearer: bool = True,
                 headers: Mapping[str, str] | None = None, namespace: str | None = "App.Events",
                 transports: Iterable[str] | None = None, socketio_path: str = "socket.io",
                 reconnection: bool = True, reconnection_delay: float = 1.0,
                 reconnection_delay_max: float = 30.0, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.namespace = namespace
        self.bearer = bearer
        self.connect_timeout = connect_timeout
        self.reconnection = reconnection
        self.reconnection_delay = reconnection_delay
        self.reconnection_delay_max = reconnection_delay_max
        self._token = token
        self._auth_headers = dict(auth_headers or {})
        self._headers = dict(headers or {})
        self._transports = list(transports) if transports is not None else None
        self._socketio_path = socketio_path
        self._channels: dict[str, Channel] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._retry: asyncio.Task[None] | None = None
        self._connection_callbacks: dict[str, list[Callback]] = {}
        self.connections = 0  # successful connections so far (reconnections included)
        # Connection-state recovery (echo-server with socketio.connectionStateRecovery):
        # the private id and the last offset the next handshake brings back.
        self._pid: str | None = None
        self._offset: str | None = None
        self.recovered = False  # the last connection came back as the same session
        self.sio = _RecoveringClient(
            self._connected_with, reconnection=reconnection,
            reconnection_delay=reconnection_delay, reconnection_delay_max=reconnection_delay_max,
            randomization_factor=0.5, logger=False, engineio_logger=False)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_any)

    # -- connection ------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        return self._token

    def set_token(self, token: str | None) -> None:
        """Use ``token`` from now on: the next (re)connection's handshake and every later
        subscribe. A live connection keeps the token it was admitted with."""
        self._token = token

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    @property
    def socket_id(self) -> str | None:
        """What Laravel gets as ``X-Socket-ID`` (``Echo.socketId()``), for ``toOthers``."""
        return self.sio.get_sid("/") if self.sio.connected else None

    def on(self, event: str, callback: Callback) -> Self:
        """``connect`` (every connection, first included), ``disconnect(reason)``."""
        self._connection_callbacks.setdefault(event, []).append(callback)
        return self

    def _auth_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"headers": self._subscribe_headers()}
        if self._token:
            payload["token"] = self._token
        if self._pid is not None:  # come back as the same session, with what was missed
            payload["pid"] = self._pid
            if self._offset is not None:
                payload["offset"] = self._offset
        return payload

    def _connected_with(self, data: Any) -> None:
        pid = data.get("pid") if isinstance(data, dict) else None
        self.recovered = pid is not None and pid == self._pid
        if not self.recovered:
            self._offset = None  # a new session: offsets start over
        self._pid = pid if isinstance(pid, str) else None

    def _subscribe_headers(self) -> dict[str, str]:
        headers = dict(self._auth_headers)
        if self.bearer and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def connect(self) -> Self:
        """Connect (raises ``socketio.exceptions.ConnectionError`` when refused, e.g. a bad
        token); channels created before are subscribed as soon as the connection is up."""
        self._closing = False
        await self.sio.connect(self.url, headers=self._headers, auth=self._auth_payload,
                               transports=self._transports, socketio_path=self._socketio_path,
                               wait_timeout=self.connect_timeout)
        return self

    async def disconnect(self) -> None:
        """Close for good: no more reconnection, pending work cancelled."""
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None
        await self.sio.disconnect()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    close = disconnect

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.disconnect()

    async def _on_connect(self) -> None:
        self.connections += 1
        for channel in list(self._channels.values()):
            await self._subscribe(channel)
        for callback in list(self._connection_callbacks.get("connect", ())):
            await _call(callback)

    async def _on_disconnect(self, reason: Any = None) -> None:
        for channel in self._channels.values():
            if isinstance(channel, PresenceChannel):
                channel._members.clear()  # offline, nobody is known to be here
        for callback in list(self._connection_callbacks.get("disconnect", ())):
            await _call(callback, reason)
        if (not self._closing and self.reconnection
                and reason == self.sio.reason.SERVER_DISCONNECT and self._retry is None):
            # python-socketio, like socket.io-client, never retries after the server said
            # goodbye; echo-server says it when a token expires, and a new one may be set.
            self._retry = asyncio.create_task(self._reconnect_after_server_disconnect())

    async def _reconnect_after_server_disconnect(self) -> None:
        delay = self.reconnection_delay
        try:
            while not self._closing:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                if self._closing or self.sio.connected:
                    return
                try:
                    await self.connect()
                    return
                except socketio.exceptions.ConnectionError as error:
                    log.info("echo_client: reconnecting failed (%s); retrying", error)
                delay = min(delay * 2, self.reconnection_delay_max)
        finally:
            self._retry = None

    async def _on_any(self, event: str, *args: Any) -> None:
        if not args or not isinstance(args[0], str):
            return
        if self._pid is not None and len(args) == 3 and isinstance(args[2], str):
            # With recovery, a broadcast's last argument is its offset, not Echo's data.
            self._offset = args[2]
            args = args[:2]
        channel = self._channels.get(args[0])
        if channel is not None:
            await channel._dispatch(event, list(args[1:]))

    # -- channels ----------------------------------------------------------------------
    def channel(self, name: str) -> Channel:
        return self._channel(name, Channel)

    def private(self, name: str) -> PrivateChannel:
        channel = self._channel(PRIVATE + name, PrivateChannel)
        assert isinstance(channel, PrivateChannel)
        return channel

    def join(self, name: str) -> PresenceChannel:
        channel = self._channel(PRESENCE + name, PresenceChannel)
        assert isinstance(channel, PresenceChannel)
        return channel

    def _channel(self, full: str, kind: type[Channel]) -> Channel:
        channel = self._channels.get(full)
        if channel is None:
            channel = kind(self, full)
            self._channels[full] = channel
            if self.sio.connected:
                self._spawn(self._subscribe(channel))
        return channel

    def leave(self, name: str) -> None:
        """Leave ``name``, ``private-name`` and ``presence-name``, as Echo's ``leave``."""
        for full in (name, PRIVATE + name, PRESENCE + name):
            self.leave_channel(full)

    def leave_channel(self, full: str) -> None:
        if self._channels.pop(full, None) is not None:
            self._emit_soon("unsubscribe", {"channel": full,
                                            "auth": {"headers": self._subscribe_headers()}})

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    async def _subscribe(self, channel: Channel) -> None:
        payload = {"channel": channel.name, "auth": {"headers": self._subscribe_headers()}}
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.sio.emit("subscribe", payload)  # not connected: the next connect does it

    def _emit_soon(self, event: str, payload: dict[str, Any]) -> None:
        if self.sio.connected:
            self._spawn(self._emit(event, payload))

    async def _emit(self, event: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.sio.emit(event, payload)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
