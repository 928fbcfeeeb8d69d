"""Laravel's channel semantics, for any wire protocol: who may join which channel, with
what bounds, and what happens when a connection comes and goes.

Adapters decode their protocol's messages and call ``open``/``subscribe``/``unsubscribe``/
``client_event``/``close``; the core answers through the connection's ``Wire`` and says what
happened on the ``Lifecycle``. The rules are laravel-echo-server 1.6.3's (see
docs/compatibility.md), including its unanchored name rules, minus its crashes: a
disconnect at any moment (during a pending authorization, after a 403, twice) is handled,
and every refusal is counted and logged at a bounded rate.

About 700 lines because a connection's whole life is here, in the order it happens (open,
subscribe and authorize, whisper, close or park, recover here or from another instance):
parking, restoring and taking over move the same state ``_join``/``_leave`` keep, and
splitting them off would hand that state to a second class. Presence ordering, history,
sessions, their records in Redis, the stream's gaps and limits are modules of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer
from channel_auth.jwt_auth import AuthenticationError, JwtAuthenticator, TokenSources
from echo_common.jsoncodec import dumps

from .cache import LastEvents
from .cluster import Cluster
from .connection import ClientState, Connection
from .events import (
    Authorized,
    ClientEvent,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionRefused,
    Lifecycle,
    LocalChannelOccupied,
    LocalChannelVacated,
    Recovered,
    RecoveryFailed,
    Subscribed,
    SubscriptionRefused,
)
from .fanout import DeliveryObserver, Fanout
from .history import Entry
from .limits import (
    CLIENT_EVENTS_OFF,
    CLIENT_EVENTS_OVER_RATE,
    TOO_MANY_CHANNELS,
    ChannelLimits,
    SubscriptionCounter,
    channel_name_problem,
    valid_text,
)
from .names import is_client_event, is_presence, is_private
from .presence import Member, RedisPresenceStore, user_key
from .presence_flow import PresenceFlow
from .recovery import (
    RECOVERABLE_REASONS,
    SHUTTING_DOWN,
    Parked,
    RecoveryRefused,
    merged,
    parse_offset,
)
from .recovery_parts import RecoveryParts
from .rooms import Rooms
from .shared_sessions import Handover

log = logging.getLogger("echo_server.channels")

ErrorReporter = Callable[[str, str], None]
# Sends a client event to a channel's members but one: here, and with several instances
# also through the relay (echo_server.core.cluster).
RoomEmitter = Callable[[str, str, str, str | None], int]
RoomRelay = Callable[[str, str, str, str | None], None]


def _relayed(local: RoomEmitter, relay: RoomRelay) -> RoomEmitter:
    """Told here first (the sender's neighbours do not wait for Redis), then relayed."""
    def emit(room: str, event: str, data_json: str, except_id: str | None = None) -> int:
        count = local(room, event, data_json, except_id)
        relay(room, event, data_json, except_id)
        return count
    return emit


def _subject(state: ClientState) -> object:
    claims = state.claims
    return claims.get("sub") if claims else None


def _member_of(channel_data: dict[str, Any] | None) -> Member | None:
    if not channel_data or channel_data.get("user_id") is None:
        return None
    return Member(channel_data["user_id"], channel_data.get("user_info"))


class ChannelCore:
    """Everything it works with is given at construction, built before it: recovery's parts
    (None: recovery off), the cluster (None: one instance), whose relay then carries
    whispers and presence changes to the other instances, the presence store the instances
    share (used once start-up found Redis answering: ``PresenceFlow.share``) and what times
    each delivered batch (metrics). The cluster delivers into the core too, but only once
    started (``Cluster.start`` takes the core's fan-out and presence)."""

    def __init__(self, authorizer: ChannelAuthorizer, report_error: ErrorReporter, *,
                 limits: ChannelLimits | None = None,
                 authenticator: JwtAuthenticator | None = None,
                 recovery: RecoveryParts | None = None,
                 cluster: Cluster | None = None,
                 shared_presence: RedisPresenceStore | None = None,
                 delivery_observer: DeliveryObserver | None = None) -> None:
        self.authorizer = authorizer
        self.report_error = report_error
        self.limits = limits or ChannelLimits()
        self.authenticator = authenticator
        self.connections: dict[str, Connection] = {}
        self.rooms = Rooms()
        self.recovery = recovery
        # Read by the adapters, the HTTP side and the tests: recovery's parts, or None.
        self.history = recovery.history if recovery is not None else None
        self.sessions = recovery.sessions if recovery is not None else None
        self.shared = recovery.shared if recovery is not None else None
        self.lifecycle = Lifecycle()
        self.last_events = LastEvents(self.lifecycle)  # cache channels
        self.fanout = Fanout(self.rooms, self.connections, self.last_events, self.history,
                             recovery.positions if recovery is not None else None,
                             delivery_observer)
        self.presence = PresenceFlow(
            self.rooms, self.fanout, self.lifecycle, report_error, shared=shared_presence,
            relay=cluster.relay_presence if cluster is not None else None)
        self.subscriptions = SubscriptionCounter(self.limits)
        # Client events: local; with several instances, also relayed.
        self.emit_room: RoomEmitter = (
            self.fanout.emit_to_room if cluster is None
            else _relayed(self.fanout.emit_to_room, cluster.relay))

    def authorize_with(self, authorizer: ChannelAuthorizer,
                       authenticator: JwtAuthenticator | None) -> None:
        """A reload's authorization chain and JWT verifier, for what is asked from now on
        (what is in flight finishes on the old ones)."""
        self.authorizer, self.authenticator = authorizer, authenticator

    # -- connections -------------------------------------------------------------
    def authenticate(self, connection: Connection,
                     sources: Callable[[], TokenSources]) -> Awaitable[str | None] | None:
        """With JWT configured, the token is verified before the connection opens (the
        awaitable gives the refusal's client-safe message, or None); without, nothing to
        wait for."""
        if self.authenticator is None:
            return None
        return self._authenticate(self.authenticator, connection, sources())

    async def _authenticate(self, authenticator: JwtAuthenticator, connection: Connection,
                            sources: TokenSources) -> str | None:
        try:
            claims = await authenticator.authenticate(sources)
        except AuthenticationError as exc:
            # The message is client-safe and never holds the token.
            self.report_error("auth_failed", f"handshake refused ({exc.reason}, "
                              f"token from {exc.source or 'nowhere'})")
            return str(exc)
        state = connection.state
        if state.wire.gone(connection):
            # Gone during the await: it never opens, so no close runs to cancel an expiry
            # timer, which would hold the connection until ``exp``.
            return None
        if claims is not None:
            state.claims = claims
            delay = authenticator.expires_in(claims)
            if delay is not None:
                state.expiry = asyncio.get_running_loop().call_later(
                    delay, self._expired, connection)
        return None

    def _expired(self, connection: Connection) -> None:
        if self.connections.get(connection.id) is connection:
            self.report_error("token_expired",
                              f"token of {connection.id} expired: disconnecting")
            connection.state.wire.disconnect(connection, "token expired")

    def open(self, connection: Connection, since: float, identity: str | None) -> None:
        self.connections[connection.id] = connection
        if self.lifecycle.wants(ConnectionOpened):
            self.lifecycle.emit(ConnectionOpened(connection, since, identity))

    def refused(self, connection: Connection, message: str) -> None:
        if self.lifecycle.wants(ConnectionRefused):
            self.lifecycle.emit(ConnectionRefused(connection, message))

    def close(self, connection: Connection, reason: str,
              identities: tuple[str, ...] = ()) -> None:
        state = connection.state
        if self.connections.get(connection.id) is connection:
            del self.connections[connection.id]
        if state.expiry is not None:
            state.expiry.cancel()
            state.expiry = None
        pending = state.pending
        if pending:
            for task in pending.values():
                task.cancel()
            pending.clear()
        recovery = self.recovery
        if recovery is not None and state.recovery_token is not None:
            if reason in RECOVERABLE_REASONS:
                self._park(connection, recovery, reason == SHUTTING_DOWN)
            else:
                recovery.sessions.forget(connection)
                if recovery.shared is not None:
                    recovery.shared.ended(state.recovery_token)
        if recovery is None or state.recovery_token not in recovery.sessions.parked:
            self.presence.leave_all(connection)  # before the rooms: members leave, then it empties
        for channel in list(state.channels):
            self._leave(channel, connection)
        if self.lifecycle.wants(ConnectionClosed):
            self.lifecycle.emit(ConnectionClosed(connection, reason, identities))

    def connections_of_user(self, user_id: Any) -> list[Connection]:
        """This instance's connections signed in as ``user_id`` or a presence member as that
        user (loosely: ``1`` and ``"1"`` are one user), for Pusher's terminate_connections."""
        wanted = user_key(user_id)
        return [connection for connection in self.connections.values()
                if (connection.state.user is not None
                    and user_key(connection.state.user) == wanted)
                or (connection.state.presence and any(
                    user_key(member.user_id) == wanted
                    for member in connection.state.presence.values()))]

    # -- recovery -----------------------------------------------------------------------
    def recoverable(self, connection: Connection) -> str | None:
        """Make a connection recoverable (its wire carries offsets); the token its client
        comes back with. None when recovery is off."""
        if self.recovery is None:
            return None
        state = connection.state
        if state.joined is None:
            state.joined = {}
        return self.recovery.sessions.issue(connection)

    def _park(self, connection: Connection, recovery: RecoveryParts, stopping: bool) -> None:
        """Keep what a dropped connection had, for the window: its channels' history
        (retained before it leaves them, so no record is dropped in between) and, for
        the grace, its presence. Its subscriptions stay counted against its client's and
        the server's bounds, and a client keeps at most ``max_parked_per_address``
        sessions: its oldest one ends to make room. Not while this process stops: then
        every session is parked for another instance to take over (``end_sessions``
        follows, and leaves their records in Redis), and none may end before."""
        sessions, history = recovery.sessions, recovery.history
        state = connection.state
        joined = state.joined or {}
        for channel in joined:
            history.retain(channel)
        client, most = state.client, self.limits.max_parked_per_address
        if most and client and not stopping and not self.limits.trusted(state.address):
            while sessions.held_by(client) >= most:
                self._end_parked(recovery, client)
        parked = sessions.park(connection, joined, self._grace_over,
                               lambda over: self._session_over(recovery, over))
        self.subscriptions.add(client, len(parked.channels))
        if recovery.shared is not None and state.recovery_token is not None:
            recovery.shared.parked(state.recovery_token)

    def _end_parked(self, recovery: RecoveryParts, client: str) -> bool:
        """End ``client``'s longest-parked session before its window (to make room for its
        newer ones); False when it has none."""
        sessions = recovery.sessions
        token = sessions.oldest(client)
        parked = sessions.take(token) if token is not None else None
        if parked is None:
            return False
        self.report_error("recovery_evicted", f"a parked session of {client} ended early: "
                          "it holds too many (limits.maxParkedSessionsPerAddress or its "
                          "subscription bounds)")
        self._session_over(recovery, parked)
        return True

    def _grace_over(self, parked: Parked) -> None:
        """The dropped connection did not come back within the presence grace: its members
        leave, announced; a later recovery joins them again."""
        parked.members = dict(parked.state.presence or {})
        self.presence.leave_all(parked)

    def _session_over(self, recovery: RecoveryParts, parked: Parked,
                      stopping: bool = False) -> None:
        history = recovery.history
        for channel in parked.channels:
            history.release(channel)
        self.subscriptions.remove(parked.state.client, len(parked.channels))
        self.presence.leave_all(parked)
        token, shared = parked.state.recovery_token, recovery.shared
        if shared is not None and token is not None:
            if stopping:  # another instance may still take it over
                shared.forget(token)
            else:
                shared.ended(token)

    async def prepare_recovery(self, connection: Connection, token: object,
                               offset: object) -> None:
        """Before a recovering connection opens: when another instance owns its session,
        what it missed is gathered here (``recover`` then finds it). The last await; the
        connection must open in the step in which this returns."""
        recovery = self.recovery
        shared = recovery.shared if recovery is not None else None
        if (recovery is None or shared is None or not isinstance(token, str)
                or not 0 < len(token) <= 64):
            return
        found = await shared.owner(token)
        if found is None or found[0] == shared.owner_id:
            return  # this instance's own, or nobody's: its memory decides
        stale = recovery.sessions.take(token)  # held here once; the client went elsewhere since
        if stale is not None:
            self._session_over(recovery, stale)
        try:
            connection.state.handover = await shared.take_over(
                token, found[1], offset, _subject(connection.state), connection.state.tag)
        except RecoveryRefused as refused:
            connection.state.handover = refused

    def recover(self, connection: Connection, token: str, offset: object) -> Parked | Handover:
        """The session ``token`` names, for ``connection`` to take over with ``restore``, or
        RecoveryRefused (then the client gets a new session)."""
        try:
            handover, connection.state.handover = connection.state.handover, None
            if isinstance(handover, RecoveryRefused):
                raise handover
            if isinstance(handover, Handover):
                return handover
            return self._recover(connection, token, offset)
        except RecoveryRefused as refused:
            if self.lifecycle.wants(RecoveryFailed):
                self.lifecycle.emit(RecoveryFailed(connection, refused.reason))
            raise

    def _recover(self, connection: Connection, token: str, offset: object) -> Parked:
        recovery = self._recovery_on()
        sessions, history = recovery.sessions, recovery.history
        live = sessions.live.get(token)
        if live is not None and live is not connection:
            if live.state.tag != connection.state.tag:
                raise RecoveryRefused("other_app")  # and the live connection goes on
            # Back before this side noticed the drop: the old connection ends now, as dropped.
            live.state.wire.disconnect(live, "transport close")
        parked = sessions.parked.get(token)
        if parked is None:
            raise RecoveryRefused("unknown_session")
        if parked.state.tag != connection.state.tag:
            # Another app's (apps/tags.py): its channels are not this endpoint's to give
            # back; the session stays for its own client.
            raise RecoveryRefused("other_app")
        if _subject(parked.state) != _subject(connection.state):
            raise RecoveryRefused("other_user")  # the session stays for its own client
        sessions.take(token)
        try:
            after = parse_offset(offset, history.seq)
            parts = []
            for channel, joined in parked.joined():
                entries = history.since(channel, joined if after is None else max(after, joined),
                                        parked.id)
                if entries is None:
                    raise RecoveryRefused("history_evicted")
                if entries:
                    parts.append(entries)
            parked.missed = merged(parts) if parts else []
        except RecoveryRefused:
            self._session_over(recovery, parked)
            raise
        return parked

    def _recovery_on(self) -> RecoveryParts:
        """Recovery's parts, for the steps only a recoverable session reaches."""
        if self.recovery is None:
            raise RecoveryRefused("off")
        return self.recovery

    def restore(self, connection: Connection, parked: Parked | Handover) -> list[Entry]:
        """``connection`` takes the parked one's place: the same token, channels (no new
        authorization: Echo's repeated ``subscribe`` is answered from here), and presence;
        what it missed is returned, in order, to be sent. Its id is the parked one's where
        the protocol lets the server choose it (Engine.IO 4), else its own (Engine.IO 3,
        whose socket id is the new engine session's)."""
        recovery = self._recovery_on()
        if isinstance(parked, Handover):
            return self._take_over(connection, parked, recovery)
        sessions, history = recovery.sessions, recovery.history
        old, state = parked.state, connection.state
        state.recovery_token = old.recovery_token
        sessions.issue(connection)
        state.joined = {}
        state.restored = set()
        self.subscriptions.remove(old.client, len(parked.channels))  # live again, below
        for channel, joined in parked.joined():
            self._join(channel, connection)
            state.joined[channel] = joined
            state.restored.add(channel)
            history.release(channel)  # the session's hold; the live connection holds it now
        if old.presence:  # within the grace: still a member, nobody was told otherwise
            state.presence, old.presence = old.presence, None
            if connection.id != parked.id:
                self.presence.move(parked.id, connection)
        elif parked.members:  # its leaving was announced: so is its return
            for channel, member in parked.members.items():
                if channel in state.channels:
                    self.presence.enter(connection, channel, member)
        if self.lifecycle.wants(Recovered):
            self.lifecycle.emit(Recovered(connection, len(parked.missed)))
        return parked.missed

    def _take_over(self, connection: Connection, handover: Handover,
                   recovery: RecoveryParts) -> list[Entry]:
        """A session another instance held: its channels are joined here (no authorization,
        as for a local recovery), and the stream's entries it missed are to be sent."""
        sessions, history, shared = recovery.sessions, recovery.history, recovery.shared
        if shared is None:  # a Handover comes only from the shared sessions
            raise RecoveryRefused("off")
        state = connection.state
        state.recovery_token = handover.token
        sessions.issue(connection)
        shared.claim(handover.token, connection.id, _subject(state), handover.channels)
        state.joined = {}
        state.restored = set(handover.channels)
        for channel in handover.channels:
            self._join(channel, connection)
        seq, relay, now = history.seq, shared.positions.relay, time.monotonic()
        missed = [Entry(seq, e.channel, e.event, e.data, e.socket, now,
                        f"{seq}.{e.id}.{relay}") for e in handover.missed]
        if self.lifecycle.wants(Recovered):
            self.lifecycle.emit(Recovered(connection, len(missed)))
        return missed

    # -- subscriptions ---------------------------------------------------------------
    def subscribe(self, connection: Connection, channel: Any, auth_headers: dict[str, str],
                  authorizer: ChannelAuthorizer | None = None, *,
                  pusher_names: bool = False) -> None:
        """``authorizer``: the adapter's own, for this subscribe (Pusher clients bring a
        signature to check); laravel-echo-server's callback to the app otherwise.
        ``pusher_names``: the name must be one Pusher's protocol allows."""
        limits = self.limits
        problem = channel_name_problem(channel, limits.max_channel_name, pusher=pusher_names)
        state = connection.state
        if problem is not None:
            self.report_error("bad_subscribe", f"subscribe refused: {problem}")
            if isinstance(channel, str) and valid_text(channel) and len(channel) <= 1000:
                state.wire.refused(connection, channel, 400)
            return
        if state.tag:  # an isolated app's client: its own channel of that name
            channel += state.tag
        restored = state.restored
        if restored and channel in restored and channel in state.channels:
            restored.discard(channel)  # a client repeating its subscribe after recovering
            self._answer_again(connection, channel)
            return
        pending = state.pending
        if channel not in state.channels and (pending is None or channel not in pending):
            held = len(state.channels) + (len(pending) if pending else 0)
            bounds = state.bounds
            if bounds is not None and bounds.max_channels and held >= bounds.max_channels:
                self.report_error("too_many_channels", f"subscribe to {channel!r} refused: "
                                  f"{connection.id} is in {bounds.max_channels} channels, its "
                                  "app's maxChannelsPerConnection")
                self._refused(connection, channel, TOO_MANY_CHANNELS)
                return
            if held >= limits.max_channels:
                self._refuse(connection, channel, "too_many_channels",
                             f"{connection.id} is in {limits.max_channels} channels already")
                return
            refusal = self.subscriptions.refusal(state.client, state.address)
            if refusal is not None and self.recovery is not None:
                refusal = self._make_room(state, self.recovery, refusal)
            if refusal is not None:
                self._refuse(connection, channel, "too_many_subscriptions", refusal)
                return
        if not is_private(channel):
            if self._join(channel, connection):
                state.wire.subscribed(connection, channel, None)
                self.last_events.give(connection, channel)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s joined %s", connection.id, channel)
            return
        if pending is None:
            pending = state.pending = {}
        previous = pending.pop(channel, None)
        if previous is not None:
            previous.cancel()
        elif len(pending) >= limits.max_pending_auth:
            self._refuse(connection, channel, "rate_limited",
                         f"{connection.id} has {limits.max_pending_auth} authorizations in "
                         "flight already")
            return
        request = AuthRequest(
            channel=channel,
            socket_id=connection.id,
            headers=auth_headers,
            handshake_headers=state.headers,
            claims=state.claims,
            # One client address shares one fair part of the auth host, however many
            # connections it opens.
            who=state.client or connection.id,
        )
        task = asyncio.ensure_future(self._authorize(connection, request,
                                                     authorizer or self.authorizer))
        pending[channel] = task
        task.add_done_callback(lambda t: pending.pop(channel, None) if pending.get(channel) is t
                               else None)

    def _make_room(self, state: ClientState, recovery: RecoveryParts, refusal: str | None
                   ) -> str | None:
        """Over a bound: the client's own parked sessions, oldest first, give way to its
        live subscriptions (a page that came back without recovering holds its old
        channels twice until then). Still refused when that is not enough."""
        while refusal is not None and self._end_parked(recovery, state.client):
            refusal = self.subscriptions.refusal(state.client, state.address)
        return refusal

    def _answer_again(self, connection: Connection, channel: str) -> None:
        """What the subscribe would have answered, without joining or authorizing again."""
        state = connection.state
        if state.presence and channel in state.presence:
            self.presence.list_to(connection, channel)
        else:
            state.wire.subscribed(connection, channel, None)

    def _refuse(self, connection: Connection, channel: str, kind: str, why: str) -> None:
        """Over a bound: counted, and the client told as for a refused authorization (Echo
        hands the status to the channel's error callback)."""
        self.report_error(kind, f"subscribe to {channel!r} refused: {why}")
        self._refused(connection, channel, 429)

    def _refused(self, connection: Connection, channel: str, status: int) -> None:
        connection.state.wire.refused(connection, channel, status)
        if self.lifecycle.wants(SubscriptionRefused):
            self.lifecycle.emit(SubscriptionRefused(connection, channel, status))

    async def _authorize(self, connection: Connection, request: AuthRequest,
                         authorizer: ChannelAuthorizer) -> None:
        started = time.monotonic()
        try:
            result = await authorizer.authorize(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("channel authorization of %r failed", request.channel)
            result = AuthResult(0)
        if self.lifecycle.wants(Authorized):
            self.lifecycle.emit(Authorized(connection, request.channel, result.allowed,
                                           result.status, time.monotonic() - started))
        if self.connections.get(connection.id) is not connection:
            return
        channel = request.channel
        if not result.allowed:
            detail = f" ({result.reason})" if result.reason else ""
            self.report_error("auth_failed", f"{channel}: status {result.status}{detail}")
            self._refused(connection, channel, result.status)
            return
        joined = self._join(channel, connection)
        log.debug("%s joined %s (authorized)", connection.id, channel)
        member = _member_of(result.channel_data) if is_presence(channel) else None
        if member is not None:
            self.presence.enter(connection, channel, member)  # its list comes with the write
            return
        if is_presence(channel):
            # The reference joins such a connection to the room as no member (and crashes
            # when it leaves); so do we, minus the crash.
            log.debug("%s joined %s without channel_data: no presence member",
                      connection.id, channel)
        if joined:
            connection.state.wire.subscribed(connection, channel, None)
            self.last_events.give(connection, channel)

    def unsubscribe(self, connection: Connection, channel: Any) -> None:
        if not isinstance(channel, str) or not channel:
            self.report_error("bad_subscribe",
                              f"unsubscribe without a channel from {connection.id}")
            return
        if connection.state.tag:
            channel += connection.state.tag
        pending = connection.state.pending
        if pending and channel in pending:
            pending.pop(channel).cancel()
        self.presence.leave(connection, channel)
        if self._leave(channel, connection):
            log.debug("%s left %s", connection.id, channel)

    # -- client events ---------------------------------------------------------------
    def client_event(self, connection: Connection, channel: Any, event: Any,
                     data: Any) -> str | None:
        """A whisper (``client-*``) to a private or presence channel the sender is in; the
        reference drops the others silently, and so do we (not an error). Returns why its
        app's bounds (``ClientState.bounds``) dropped it, for a wire that tells its client
        (Pusher's 4301); None when sent, or dropped without a word to the client."""
        state = connection.state
        bounds = state.bounds
        if bounds is not None and not bounds.client_events:
            self.report_error("client_events_off", f"client event from {connection.id} "
                              "dropped: its app has enableClientMessages false")
            return CLIENT_EVENTS_OFF
        if isinstance(channel, str) and state.tag:
            channel += state.tag
        if not (isinstance(event, str) and isinstance(channel, str) and is_client_event(event)
                and is_private(channel) and self.rooms.contains(channel, connection)):
            return None
        data_json = dumps(data)
        limits = self.limits
        if len(event) > limits.max_channel_name or not (valid_text(event)
                                                         and valid_text(data_json)):
            self.report_error("bad_client_event", f"client event from {connection.id} with a "
                              "bad name or data (too long, or not UTF-8 text)")
            return None
        # A bound in bytes, as on the wire: "ü" * 6000 is 12 KB although 6000 characters.
        size = len(data_json) if data_json.isascii() else len(data_json.encode("utf-8"))
        if size > limits.whisper_max_bytes:
            self.report_error("oversized", f"client event of {size} bytes dropped")
            return None
        # One bucket, at the tighter of the server's rate and its app's.
        rate = limits.whisper_rate
        own = bounds.client_event_rate if bounds is not None else 0.0
        if own and (own < rate or not rate):
            if not self._take_whisper_token(state, own, max(1.0, own)):
                self.report_error("rate_limited", f"client events from {connection.id} over "
                                  "its app's maxClientEventsPerSecond")
                return CLIENT_EVENTS_OVER_RATE
        elif not self._take_whisper_token(state, rate, rate):
            self.report_error("rate_limited",
                              f"client events from {connection.id} over the limit")
            return None
        self.emit_room(channel, event, data_json, connection.id)
        if self.lifecycle.wants(ClientEvent):
            self.lifecycle.emit(ClientEvent(connection, channel, event, data_json))
        return None

    @staticmethod
    def _take_whisper_token(state: ClientState, rate: float, burst: float) -> bool:
        """Token bucket: ``rate`` per second (``whisper_rate``, or its app's), bursts of
        ``burst``; kept in the connection's state, no object of its own."""
        if rate <= 0:
            return True
        now = time.monotonic()
        tokens = burst if state.whisper_tokens < 0 else min(
            burst, state.whisper_tokens + (now - state.whisper_at) * rate)
        state.whisper_at = now
        if tokens < 1.0:
            state.whisper_tokens = tokens
            return False
        state.whisper_tokens = tokens - 1.0
        return True

    # -- membership, counted against the limits -------------------------------------------
    def _join(self, channel: str, connection: Connection) -> bool:
        occupied = channel not in self.rooms
        if not self.rooms.join(channel, connection):
            return False
        state = connection.state
        self.subscriptions.add(state.client)
        recovery = self.recovery
        if state.joined is not None and recovery is not None:
            recovery.history.retain(channel)
            state.joined[channel] = recovery.history.seq
            if recovery.shared is not None and state.recovery_token is not None:
                recovery.shared.joined(state.recovery_token, connection.id, _subject(state),
                                       channel)
        lifecycle = self.lifecycle
        if occupied and lifecycle.wants(LocalChannelOccupied):
            lifecycle.emit(LocalChannelOccupied(channel))
        if lifecycle.wants(Subscribed):
            lifecycle.emit(Subscribed(connection, channel))
        return True

    def _leave(self, channel: str, connection: Connection) -> bool:
        if not self.rooms.leave(channel, connection):
            return False
        state = connection.state
        self.subscriptions.remove(state.client)
        recovery = self.recovery
        if state.joined is not None and recovery is not None:
            state.joined.pop(channel, None)
            recovery.history.release(channel)
            if (recovery.shared is not None and state.recovery_token is not None
                    and self.connections.get(connection.id) is connection):
                # Left while connected (a close keeps the record, for a recovery).
                recovery.shared.left(state.recovery_token, connection.id, _subject(state),
                                     channel)
        if channel not in self.rooms and self.lifecycle.wants(LocalChannelVacated):
            vacated = LocalChannelVacated(channel)
            if is_presence(channel):  # after its members' leaving, written in their turn
                self.presence.in_turn(channel, lambda: self.lifecycle.emit(vacated))
            else:
                self.lifecycle.emit(vacated)
        return True

    def end_sessions(self) -> None:
        """Shutting down: no parked connection comes back to this process, so their members
        leave now (written before the store is closed), not when the window ends."""
        recovery = self.recovery
        if recovery is None:
            return
        for token in list(recovery.sessions.parked):
            parked = recovery.sessions.take(token)
            if parked is not None:
                self._session_over(recovery, parked, stopping=True)

    async def drain(self) -> None:
        """Wait for presence writes in flight (shutdown, tests)."""
        await self.presence.drain()
