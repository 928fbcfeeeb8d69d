"""Laravel Echo's channel semantics on top of Socket.IO sockets.

``subscribe``, ``unsubscribe`` and ``client event`` behave as in
laravel-echo-server 1.6.3 (see docs/compatibility.md), including its
unanchored name rules, minus its crashes: every malformed payload, every
disconnect at any moment (during a pending authorization, after a 403, twice)
is handled, logged at a bounded rate and counted.

Over 400 lines because it is still both the channel core and Echo's Socket.IO handler, and
presence ordering (one turn per channel, versioned announcements) lives with them; the
channel-core issue splits it into a protocol-neutral core, a presence module and the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from broadcaster.jsoncodec import dumps, loads
from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer
from channel_auth.jwt_auth import AuthenticationError, JwtAuthenticator, TokenSources

from .hub import Hub
from .limits import LimitSettings, SubscriptionCounter, channel_name_problem, valid_text
from .presence import LeaveResult, Member, MemoryPresenceStore, PresenceStore, user_key
from .rooms import Rooms
from .transport.sockets import Socket

log = logging.getLogger("echo_server.channels")

ErrorReporter = Callable[[str, str], None]
# Called after every change of a presence channel's members (publishPresence).
PresenceListener = Callable[[str, list[Member]], Awaitable[None]]
# Hands a presence announcement (channel, event, member JSON, version) to the other instances.
PresenceRelay = Callable[[str, str, str, int], None]
# A presence operation waiting for its turn: what it returns is what its turn resolves to.
PresenceOperation = Callable[[], Awaitable[Any] | None]
# How long a stale announcement is still recognised as such: longer than any relay delay.
ANNOUNCEMENT_HORIZON = 60.0


def is_private(channel: str) -> bool:
    """Private or presence: the reference matches ``/private-.*/`` and
    ``/presence-.*/`` anywhere in the name (``orders.private-notes`` needs auth)."""
    return "private-" in channel or "presence-" in channel


def is_presence(channel: str) -> bool:
    return channel.startswith("presence-")


def is_client_event(event: str) -> bool:
    return "client-" in event


def _channel_of(payload: Any) -> Any:
    return payload.get("channel") if isinstance(payload, dict) else None


def _member_of(channel_data: dict[str, Any] | None) -> Member | None:
    if not channel_data or channel_data.get("user_id") is None:
        return None
    return Member(channel_data["user_id"], channel_data.get("user_info"))


def _forwarded_headers(payload: dict[str, Any]) -> dict[str, str]:
    auth = payload.get("auth")
    headers = auth.get("headers") if isinstance(auth, dict) else None
    if not isinstance(headers, dict):
        return {}
    return {str(k): str(v) for k, v in headers.items() if v is not None}


class _PresenceTurns:
    """This instance's side of one presence channel.

    ``queue``: its presence operations (writes, and announcements from elsewhere), one at a
    time, in the order they were asked for. So a socket's leave never overtakes its join in
    the store; a join that must be taken back is, before this instance writes anything else;
    and no announcement reaches the channel between a join's write and that socket's
    ``presence:subscribed``, whose list is the store's at the write: whatever was announced in
    between would be missing from it for good.

    ``told``: per user, the version of the last announcement made to these sockets, oldest
    first. Instances announce in their own order (their own writes at once, the others'
    through the relay), so an announcement older than one already made is stale, and telling
    it would undo a later change. ``floor`` stands in for every entry older than the horizon,
    and for every announcement seen before this record existed: the lists these sockets got
    were read later, so they hold those changes already."""

    __slots__ = ("floor", "queue", "told")

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.queue: deque[tuple[PresenceOperation, asyncio.Future[Any]]] = deque()
        self.told: dict[str, tuple[int, float]] = {}

    def fresh(self, user: str, version: int) -> bool:
        """Whether an announcement about ``user`` is later than what was told; if so it is
        recorded as told."""
        now = time.monotonic()
        told = self.told
        while told:
            oldest = next(iter(told))
            old_version, when = told[oldest]
            if now - when < ANNOUNCEMENT_HORIZON:
                break
            del told[oldest]
            self.floor = max(self.floor, old_version)
        last = told.get(user)
        if version <= max(self.floor, last[0] if last else 0):
            return False
        told.pop(user, None)  # to the end: the entries stay in the order they were told
        told[user] = (version, now)
        return True


class ChannelHandler:
    """The ``SocketHandler`` of the Socket.IO layer."""

    def __init__(self, rooms: Rooms, hub: Hub, authorizer: ChannelAuthorizer,
                 report_error: ErrorReporter, *, presence: PresenceStore | None = None,
                 authenticator: JwtAuthenticator | None = None,
                 whisper_max_bytes: int = 10_000, whisper_rate: float = 10.0,
                 max_channels: int = 10_000, max_pending_auth: int = 100,
                 limits: LimitSettings | None = None) -> None:
        self.rooms = rooms
        self.hub = hub
        self.authorizer = authorizer
        self.report_error = report_error
        self.presence = presence or MemoryPresenceStore()
        # Emits caused by clients (whispers, presence joining/leaving): local by default;
        # with several instances, also relayed to the others (echo_server.cluster).
        self.emit_room: Callable[[str, str, str, str | None], int] = hub.emit_to_room
        self.authenticator = authenticator
        self.whisper_max_bytes = whisper_max_bytes
        self.whisper_rate = whisper_rate
        self.max_channels = max_channels
        self.max_pending_auth = max_pending_auth
        self.limits = limits or LimitSettings()
        self.subscriptions = SubscriptionCounter(self.limits)
        self.on_presence_change: PresenceListener | None = None
        # Presence writes outlive the socket that caused them: kept here, never cancelled,
        # so a disconnect in the middle of a join cannot leave a ghost member behind.
        self._background: set[asyncio.Future[None]] = set()
        self.presence_members = 0  # presence memberships of local sockets (joined or joining)
        self.relay_presence: PresenceRelay | None = None  # set when instances share Redis
        self._presence_turns: dict[str, _PresenceTurns] = {}
        self._newest_version = 0  # of every presence announcement seen here

    # -- SocketHandler ----------------------------------------------------------
    def on_connect(self, socket: Socket, auth: Any) -> Awaitable[str | None] | None:
        """Without JWT configured, every connection is accepted at once (no task)."""
        if self.authenticator is None:
            return None
        return self._authenticate(socket, auth)

    async def _authenticate(self, socket: Socket, auth: Any) -> str | None:
        assert self.authenticator is not None
        handshake = socket.handshake
        sources = TokenSources(connect_payload=auth, query=handshake.query,
                               headers=handshake.headers)
        try:
            claims = await self.authenticator.authenticate(sources)
        except AuthenticationError as exc:
            # The message is client-safe and never holds the token.
            self.report_error("auth_failed", f"handshake refused ({exc.reason}, "
                              f"token from {exc.source or 'nowhere'})")
            return str(exc)
        if socket.session.closed:
            # Gone during the await: it never connects, so no disconnect handler runs to cancel
            # an expiry timer, which would hold the socket and its session until ``exp``.
            return None
        if claims is not None:
            self._data(socket)["claims"] = claims
            delay = self.authenticator.expires_in(claims)
            if delay is not None:
                handle = asyncio.get_running_loop().call_later(
                    delay, self._expired, socket)
                self._data(socket)["expiry"] = handle
        return None

    def _expired(self, socket: Socket) -> None:
        if socket.connected:
            self.report_error("token_expired", f"token of {socket.id} expired: disconnecting")
            socket.disconnect("token expired")

    def on_event(self, socket: Socket, event: str, args: list[Any]) -> None:
        payload = args[0] if args else None
        if event == "subscribe":
            self.subscribe(socket, payload)
        elif event == "unsubscribe":
            self.unsubscribe(socket, payload)
        elif event == "client event":
            self.client_event(socket, payload)

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        expiry = (socket.data or {}).get("expiry")
        if expiry is not None:
            expiry.cancel()
        pending = self._pending(socket, create=False)
        if pending:
            for task in pending.values():
                task.cancel()
            pending.clear()
        self._leave_all(socket)
        joined = (socket.data or {}).get("presence")
        if joined:
            for channel in list(joined):
                self._presence_leave(socket, channel)

    # -- events -----------------------------------------------------------------
    def subscribe(self, socket: Socket, payload: Any) -> None:
        channel = _channel_of(payload)
        problem = channel_name_problem(channel, self.limits.max_channel_name)
        if problem is not None:
            self.report_error("bad_subscribe", f"subscribe refused: {problem}")
            if isinstance(channel, str) and valid_text(channel) and len(channel) <= 1000:
                socket.emit("subscription_error", channel, 400)
            return
        pending = self._pending(socket, create=False)
        if channel not in socket.rooms and (pending is None or channel not in pending):
            if len(socket.rooms) + (len(pending) if pending else 0) >= self.max_channels:
                self._refuse_subscribe(socket, channel, "too_many_channels",
                                       f"{socket.id} is in {self.max_channels} channels "
                                       "already")
                return
            refusal = self.subscriptions.refusal(socket.handshake.address)
            if refusal is not None:
                self._refuse_subscribe(socket, channel, "too_many_subscriptions", refusal)
                return
        if not is_private(channel):
            if self._join(channel, socket) and log.isEnabledFor(logging.DEBUG):
                log.debug("%s joined %s", socket.id, channel)
            return
        pending = self._pending(socket, create=True)
        assert pending is not None
        previous = pending.pop(channel, None)
        if previous is not None:
            previous.cancel()
        elif len(pending) >= self.max_pending_auth:
            self._refuse_subscribe(socket, channel, "rate_limited",
                                   f"{socket.id} has {self.max_pending_auth} authorizations "
                                   "in flight already")
            return
        request = AuthRequest(
            channel=channel,
            socket_id=socket.id,
            headers=_forwarded_headers(payload),
            handshake_headers=socket.handshake.headers,
            claims=(socket.data or {}).get("claims"),
            # One client address shares one fair part of the auth host, however many
            # sockets it opens; the socket stands in until handshakes record the address.
            who=getattr(socket.handshake, "address", None) or socket.id,
        )
        task = asyncio.ensure_future(self._authorize(socket, request))
        pending[channel] = task
        task.add_done_callback(lambda t: pending.pop(channel, None) if pending.get(channel) is t
                               else None)

    def _refuse_subscribe(self, socket: Socket, channel: str, kind: str, why: str) -> None:
        """Over a per-connection bound: counted, and the client told as for a refused
        authorization (Echo hands the status to the channel's error callback)."""
        self.report_error(kind, f"subscribe to {channel!r} refused: {why}")
        socket.emit("subscription_error", channel, 429)

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
            detail = f" ({result.reason})" if result.reason else ""
            self.report_error("auth_failed",
                              f"{request.channel}: status {result.status}{detail}")
            socket.emit("subscription_error", request.channel, result.status)
            return
        self._join(request.channel, socket)
        log.debug("%s joined %s (authorized)", socket.id, request.channel)
        if is_presence(request.channel):
            member = _member_of(result.channel_data)
            if member is None:
                # The reference joins such a socket to the room as no member (and
                # crashes when it leaves); so do we, minus the crash.
                log.debug("%s joined %s without channel_data: no presence member",
                          socket.id, request.channel)
            else:
                self._presence_enter(socket, request.channel, member)

    def unsubscribe(self, socket: Socket, payload: Any) -> None:
        channel = _channel_of(payload)
        if not isinstance(channel, str) or not channel:
            self.report_error("bad_subscribe", f"unsubscribe without a channel from {socket.id}")
            return
        pending = self._pending(socket, create=False)
        if pending and channel in pending:
            pending.pop(channel).cancel()
        if self._leave(channel, socket):
            log.debug("%s left %s", socket.id, channel)
        self._presence_leave(socket, channel)

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
        if len(event) > self.limits.max_channel_name or not (valid_text(event)
                                                              and valid_text(data)):
            self.report_error("bad_client_event", f"client event from {socket.id} with a bad "
                              "name or data (too long, or not UTF-8 text)")
            return
        # A bound in bytes, as on the wire: "ü" * 6000 is 12 KB although 6000 characters.
        size = len(data) if data.isascii() else len(data.encode("utf-8"))
        if size > self.whisper_max_bytes:
            self.report_error("oversized", f"client event of {size} bytes dropped")
            return
        if not self._take_whisper_token(socket):
            self.report_error("rate_limited", f"client events from {socket.id} over the limit")
            return
        self.emit_room(channel, event, data, except_id=socket.id)

    # -- presence -----------------------------------------------------------------
    def _presence_enter(self, socket: Socket, channel: str, member: Member) -> None:
        # channel -> member: what this instance writes (again, if Redis loses it) and removes.
        joined: dict[str, Member] = self._data(socket).setdefault("presence", {})
        previous = joined.get(channel)
        if previous is not None and user_key(previous.user_id) != user_key(member.user_id):
            self._presence_leave(socket, channel)  # another user on this socket now
        if channel not in joined:
            self.presence_members += 1
        joined[channel] = member
        self._in_turn(channel, lambda: self._presence_join(socket, channel, member))

    def _presence_leave(self, socket: Socket, channel: str) -> None:
        joined = (socket.data or {}).get("presence")
        if joined and channel in joined:
            del joined[channel]
            self.presence_members -= 1
            socket_id = socket.id
            self._in_turn(channel, lambda: self._presence_remove(socket_id, channel))

    async def _presence_join(self, socket: Socket, channel: str, member: Member, *,
                             announce: bool = True, here: bool = True) -> bool:
        """Write one membership; tell the socket its list (``here``) and the others that its
        user joined (``announce``, when the user was not there). True when it was written
        and stays."""
        joined = (socket.data or {}).get("presence")
        if not joined or joined.get(channel) is not member:
            return False  # left, or subscribed again, before its turn
        left: LeaveResult | None = None
        try:
            result = await self.presence.join(channel, socket.id, member)
            if channel not in joined:
                # Gone while the write was in flight (its leave, queued behind, will find
                # nothing). A new member is taken back unseen when no presence write came
                # in between; otherwise it was there before (announced), or another write
                # may have counted it as its user's first or last socket: it joined and
                # leaves like any member, announced.
                left = await self.presence.leave(
                    channel, socket.id,
                    unless_changed_since=result.version if result.added else None)
                if left.member is None:
                    return False
        except Exception as exc:
            self.report_error("presence", f"presence join of {channel!r} failed: {exc}")
            return False
        if announce and result.first_for_user:
            # A socket that gets its list is not told of itself; one written again is, as
            # it may have heard of its user leaving.
            self._announce(channel, "presence:joining", member, result.version,
                           socket.id if here else None)
        if left is not None:
            await self._presence_left(channel, left)
            return False
        if here and joined.get(channel) is member:
            socket.emit("presence:subscribed", channel, [m.public() for m in result.members])
        await self._presence_changed(channel, result.members)
        return True

    async def _presence_remove(self, socket_id: str, channel: str) -> None:
        try:
            result = await self.presence.leave(channel, socket_id)
        except Exception as exc:
            self.report_error("presence", f"presence leave of {channel!r} failed: {exc}")
            return
        await self._presence_left(channel, result)

    async def _presence_left(self, channel: str, result: LeaveResult) -> None:
        if result.member is None:
            return
        if result.last_for_user:
            self._announce(channel, "presence:leaving", result.member, result.version)
        await self._presence_changed(channel)

    async def restore_presence(self, announce: bool) -> int:
        """Write this instance's presence members into the store again, after Redis lost
        them (a restart without persistence, a failover to a replica that lagged) or after
        another instance purged them while this one could not reach Redis, and announced
        them leaving: then ``announce`` their return. Returns how many were written."""
        turns = []
        for channel in [name for name in self.rooms if is_presence(name)]:
            for socket in list(self.rooms.members(channel) or ()):
                member = ((socket.data or {}).get("presence") or {}).get(channel)
                if member is not None:
                    turns.append(self._in_turn(channel, lambda s=socket, c=channel, m=member:
                                               self._presence_join(s, c, m, announce=announce,
                                                                   here=False)))
        return sum(bool(written) for written in await asyncio.gather(*turns))

    def _announce(self, channel: str, event: str, member: Member, version: int,
                  except_id: str | None = None) -> None:
        """A change this instance wrote: told here, and to the other instances."""
        data = dumps(member.public())
        self._tell(channel, event, data, user_key(member.user_id), version, except_id)
        if self.relay_presence is not None:
            self.relay_presence(channel, event, data, version)

    def presence_announced(self, channel: str, event: str, data_json: str,
                           version: int) -> None:
        """A change another instance wrote (relayed, or found by the reaper): told here in
        its turn."""
        try:
            user = user_key(loads(data_json)["user_id"])
        except (ValueError, KeyError, TypeError):
            self.report_error("presence", f"malformed presence announcement for {channel!r}")
            return
        turns = self._presence_turns.get(channel)
        if turns is not None and turns.queue:
            self._in_turn(channel, lambda: self._tell(channel, event, data_json, user, version))
        else:
            self._tell(channel, event, data_json, user, version)

    def _tell(self, channel: str, event: str, data_json: str, user: str, version: int,
              except_id: str | None = None) -> None:
        newest = self._newest_version
        self._newest_version = max(newest, version)
        turns = self._presence_turns.get(channel)
        if turns is None:
            if not self.rooms.count(channel):
                return  # nobody here to tell
            turns = self._presence_turns[channel] = _PresenceTurns(newest)
        if turns.fresh(user, version):
            self.hub.emit_to_room(channel, event, data_json, except_id)

    def _in_turn(self, channel: str, operation: PresenceOperation) -> asyncio.Future[Any]:
        """Run ``operation`` once every presence operation asked for before it on ``channel``
        here is done; the future resolves to what it returned (None when it failed)."""
        turns = self._presence_turns.get(channel)
        if turns is None:
            turns = self._presence_turns[channel] = _PresenceTurns(self._newest_version)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        turns.queue.append((operation, done))
        if len(turns.queue) == 1:
            self._spawn(self._take_turns(channel, turns))
        return done

    async def _take_turns(self, channel: str, turns: _PresenceTurns) -> None:
        while turns.queue:
            operation, done = turns.queue[0]
            result = None
            try:
                result = operation()
                if result is not None:
                    result = await result
            except Exception:
                log.exception("presence operation on %r failed", channel)
            turns.queue.popleft()
            done.set_result(result)
        if not self.rooms.count(channel):
            del self._presence_turns[channel]

    async def _presence_changed(self, channel: str, members: list[Member] | None = None) -> None:
        if self.on_presence_change is None:
            return
        try:
            if members is None:
                members = await self.presence.members(channel)
            await self.on_presence_change(channel, members)
        except Exception as exc:
            self.report_error("presence", f"presence update of {channel!r} failed: {exc}")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for presence writes in flight (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- room membership, counted against the limits ------------------------------------
    def _join(self, channel: str, socket: Socket) -> bool:
        if not self.rooms.join(channel, socket):
            return False
        self.subscriptions.add(socket.handshake.address)
        return True

    def _leave(self, channel: str, socket: Socket) -> bool:
        if not self.rooms.leave(channel, socket):
            return False
        self.subscriptions.remove(socket.handshake.address)
        return True

    def _leave_all(self, socket: Socket) -> None:
        for channel in list(socket.rooms):
            self._leave(channel, socket)

    # -- per-socket state -----------------------------------------------------------
    @staticmethod
    def _data(socket: Socket) -> dict[str, Any]:
        if socket.data is None:
            socket.data = {}
        return socket.data

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
        data = self._data(socket)
        now = time.monotonic()
        tokens, last = data.get("whisper_bucket", (self.whisper_rate, now))
        tokens = min(self.whisper_rate, tokens + (now - last) * self.whisper_rate)
        if tokens < 1.0:
            data["whisper_bucket"] = (tokens, now)
            return False
        data["whisper_bucket"] = (tokens - 1.0, now)
        return True
