"""Presence channels over time: joins and leaves written in order, announced once, in turn.

A presence join is a store write (Redis with several instances) that outlives the
connection that asked for it, and announcements arrive both from this instance's writes
and, later, from the others' through the relay. This module puts them in one order per
channel (``_PresenceTurns``) and tells each change once, so what the members hear converges
to what the store holds. It speaks to connections only through the core's ``Wire``
(``subscribed``) and fan-out (``announce_member``), never in a wire protocol's terms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from echo_common.jsoncodec import dumps, loads

from .connection import Connection
from .events import Lifecycle, MemberAdded, MemberRemoved, PresenceChanged
from .fanout import Fanout
from .names import is_presence
from .presence import (
    LeaveResult,
    Member,
    MemoryPresenceStore,
    PresenceStore,
    RedisPresenceStore,
    user_key,
)
from .rooms import Rooms

log = logging.getLogger("echo_server.core.presence")

ErrorReporter = Callable[[str, str], None]
# Hands a presence announcement (channel, added, member JSON, version) to the other instances.
PresenceRelay = Callable[[str, bool, str, int], None]
# A presence operation waiting for its turn: what it returns is what its turn resolves to.
PresenceOperation = Callable[[], Awaitable[Any] | None]
# How long a stale announcement is still recognised as such: longer than any relay delay.
ANNOUNCEMENT_HORIZON = 60.0


class _PresenceTurns:
    """This instance's side of one presence channel.

    ``queue``: its presence operations (writes, and announcements from elsewhere), one at a
    time, in the order they were asked for. So a connection's leave never overtakes its join
    in the store; a join that must be taken back is, before this instance writes anything
    else; and no announcement reaches the channel between a join's write and that
    connection's member list, whose list is the store's at the write: whatever was announced
    in between would be missing from it for good.

    ``told``: per user, the version of the last announcement made to these connections,
    oldest first. Instances announce in their own order (their own writes at once, the
    others' through the relay), so an announcement older than one already made is stale, and
    telling it would undo a later change. ``floor`` stands in for every entry older than the
    horizon, and for every announcement seen before this record existed: the lists these
    connections got were read later, so they hold those changes already."""

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


class PresenceFlow:
    def __init__(self, rooms: Rooms, fanout: Fanout, lifecycle: Lifecycle,
                 report_error: ErrorReporter, *, shared: RedisPresenceStore | None = None,
                 relay: PresenceRelay | None = None) -> None:
        self.rooms = rooms
        self.fanout = fanout
        self.lifecycle = lifecycle
        self.report_error = report_error
        self.store: PresenceStore = MemoryPresenceStore()
        self._shared = shared  # the instances' store (Redis), once `share` says so
        self.members = 0  # presence memberships of local connections (joined or joining)
        self.relay = relay  # with instances sharing Redis: the cluster's
        # Presence writes outlive the connection that caused them: kept here, never
        # cancelled, so a disconnect in the middle of a join cannot leave a ghost member.
        self._background: set[asyncio.Future[None]] = set()
        self._turns: dict[str, _PresenceTurns] = {}
        self._newest_version = 0  # of every presence announcement seen here
        # channel -> seat -> user key: joins being decided here (see `_hold`).
        self._held: dict[str, dict[object, str]] = {}

    def share(self) -> RedisPresenceStore | None:
        """Start-up found Redis answering: with a store the instances share (Redis presence),
        members are kept there for the rest of this run, and it is returned; otherwise they
        stay in memory, for the whole run. Called before any client is taken (start-up
        refuses them until it is done), since a member written to one store is never in the
        other."""
        if self._shared is not None:
            self.store = self._shared
        return self._shared

    # -- seats, for a bound on a channel's members ------------------------------------
    async def users(self, channel: str, user: str) -> set[str]:
        """The users (keys) in ``channel`` as a bound on its members must count them, asked
        while ``user``'s subscribe is decided: the store's (the cluster's) and this
        instance's, ``user``'s own seat among them while the store is awaited, so a
        simultaneous join here counts this one. The seat is given back before the answer,
        as the core's join (which `_local_users` sees) follows it in the same step
        (``ChannelCore._authorize`` enters the member)."""
        seat = self._hold(channel, user)
        try:
            present = await self.store.members(channel)
        finally:
            self._release(channel, seat)
        return {user_key(member.user_id) for member in present} | self._local_users(channel)

    def _hold(self, channel: str, user: str) -> object:
        """A seat in ``channel`` for ``user`` (a user key) while its subscribe is decided:
        the check of a bound awaits the store, and its join is written later still, so
        without a seat simultaneous joins all see the last slot free. Counted by
        `_local_users` until `_release`d."""
        seat = object()
        self._held.setdefault(channel, {})[seat] = user
        return seat

    def _release(self, channel: str, seat: object) -> None:
        held = self._held.get(channel)
        if held is not None:
            held.pop(seat, None)
            if not held:
                del self._held[channel]

    def _local_users(self, channel: str) -> set[str]:
        """The users (keys) this instance has in ``channel`` or is letting in: the seats
        held, and its connections' members, joined or entered with their write still on its
        way (which the store does not show yet)."""
        users = set(self._held.get(channel, {}).values())
        for connection in self.rooms.members(channel):
            joined = connection.state.presence
            member = joined.get(channel) if joined else None
            if member is not None:
                users.add(user_key(member.user_id))
        return users

    # -- a connection enters and leaves ----------------------------------------------
    def enter(self, connection: Connection, channel: str, member: Member) -> None:
        state = connection.state
        # channel -> member: what this instance writes (again, if Redis loses it) and removes.
        joined = state.presence
        if joined is None:
            joined = state.presence = {}
        previous = joined.get(channel)
        if previous is not None and user_key(previous.user_id) != user_key(member.user_id):
            self.leave(connection, channel)  # another user on this connection now
        if channel not in joined:
            self.members += 1
        joined[channel] = member
        self._in_turn(channel, lambda: self._join(connection, channel, member))

    def leave(self, connection: Connection, channel: str) -> None:
        joined = connection.state.presence
        if joined and channel in joined:
            del joined[channel]
            self.members -= 1
            connection_id = connection.id
            self._in_turn(channel, lambda: self._remove(connection_id, channel))

    def leave_all(self, connection: Connection) -> None:
        joined = connection.state.presence
        if joined:
            for channel in list(joined):
                self.leave(connection, channel)

    async def _join(self, connection: Connection, channel: str, member: Member, *,
                    announce: bool = True, here: bool = True) -> bool:
        """Write one membership; give the connection its list (``here``) and tell the others
        that its user joined (``announce``, when the user was not there). True when it was
        written and stays."""
        joined = connection.state.presence
        if not joined or joined.get(channel) is not member:
            return False  # left, or subscribed again, before its turn
        left: LeaveResult | None = None
        try:
            result = await self.store.join(channel, connection.id, member)
            if channel not in joined:
                # Gone while the write was in flight (its leave, queued behind, will find
                # nothing). A new member is taken back unseen when no presence write came
                # in between; otherwise it was there before (announced), or another write
                # may have counted it as its user's first or last connection: it joined and
                # leaves like any member, announced.
                left = await self.store.leave(
                    channel, connection.id,
                    unless_changed_since=result.version if result.added else None)
                if left.member is None:
                    return False
        except Exception as exc:
            self.report_error("presence", f"presence join of {channel!r} failed: {exc}")
            return False
        if announce and result.first_for_user:
            # A connection that gets its list is not told of itself; one written again is,
            # as it may have heard of its user leaving.
            self._announce(channel, True, member, result.version,
                           connection.id if here else None)
        if left is not None:
            await self._left(channel, left)
            return False
        if here and joined.get(channel) is member:
            connection.state.wire.subscribed(connection, channel,
                                             [m.public() for m in result.members])
            self.fanout.last_events.give(connection, channel)
        await self._changed(channel, result.members)
        return True

    def move(self, old_id: str, connection: Connection) -> None:
        """A recovered connection under a new id: its memberships are written under the new
        id before the old ones go, so its user never leaves and nobody is told anything."""
        for channel, member in (connection.state.presence or {}).items():
            self._in_turn(channel, partial(self._move, old_id, connection, channel, member))

    async def _move(self, old_id: str, connection: Connection, channel: str,
                    member: Member) -> None:
        try:
            await self.store.join(channel, connection.id, member)
            await self.store.leave(channel, old_id)
        except Exception as exc:
            self.report_error("presence", f"presence move in {channel!r} failed: {exc}")

    def list_to(self, connection: Connection, channel: str) -> None:
        """Give a member the channel's list again (a repeated subscribe), in its turn."""
        self._in_turn(channel, lambda: self._list_to(connection, channel))

    async def _list_to(self, connection: Connection, channel: str) -> None:
        try:
            members = await self.store.members(channel)
        except Exception as exc:
            self.report_error("presence", f"presence list of {channel!r} failed: {exc}")
            return
        connection.state.wire.subscribed(connection, channel, [m.public() for m in members])

    async def _remove(self, connection_id: str, channel: str) -> None:
        try:
            result = await self.store.leave(channel, connection_id)
        except Exception as exc:
            self.report_error("presence", f"presence leave of {channel!r} failed: {exc}")
            return
        await self._left(channel, result)

    async def _left(self, channel: str, result: LeaveResult) -> None:
        if result.member is None:
            return
        if result.last_for_user:
            self._announce(channel, False, result.member, result.version)
        await self._changed(channel)

    async def restore(self, announce: bool) -> int:
        """Write this instance's presence members into the store again, after Redis lost
        them (a restart without persistence, a failover to a replica that lagged) or after
        another instance purged them while this one could not reach Redis, and announced
        them leaving: then ``announce`` their return. Returns how many were written."""
        turns = []
        for channel in [name for name in self.rooms if is_presence(name)]:
            for connection in self.rooms.members(channel):
                member = (connection.state.presence or {}).get(channel)
                if member is not None:
                    turns.append(self._in_turn(channel, partial(
                        self._join, connection, channel, member, announce=announce,
                        here=False)))
        return sum(bool(written) for written in await asyncio.gather(*turns))

    def purged(self, channel: str, member: Member, version: int) -> None:
        """A dead instance's member whose user has no connection left, removed from the
        store by this instance: told, relayed and reported as a leave written here."""
        self._in_turn(channel, lambda: self._left(channel, LeaveResult(member, True, version)))

    # -- announcements --------------------------------------------------------------
    def _announce(self, channel: str, added: bool, member: Member, version: int,
                  except_id: str | None = None) -> None:
        """A change this instance wrote: told here, and to the other instances."""
        data = dumps(member.public())
        self._tell(channel, added, data, user_key(member.user_id), version, except_id)
        if self.relay is not None:
            self.relay(channel, added, data, version)
        if self.lifecycle.wants(MemberAdded if added else MemberRemoved):
            self.lifecycle.emit(MemberAdded(channel, member) if added
                                else MemberRemoved(channel, member))

    def announced(self, channel: str, added: bool, data_json: str, version: int) -> None:
        """A change another instance wrote (relayed, or found by the reaper): told here in
        its turn."""
        try:
            user = user_key(loads(data_json)["user_id"])
        except (ValueError, KeyError, TypeError):
            self.report_error("presence", f"malformed presence announcement for {channel!r}")
            return
        turns = self._turns.get(channel)
        if turns is not None and turns.queue:
            self._in_turn(channel, lambda: self._tell(channel, added, data_json, user, version))
        else:
            self._tell(channel, added, data_json, user, version)

    def _tell(self, channel: str, added: bool, data_json: str, user: str, version: int,
              except_id: str | None = None) -> None:
        newest = self._newest_version
        self._newest_version = max(newest, version)
        turns = self._turns.get(channel)
        if turns is None:
            if channel not in self.rooms:
                if self.fanout.records(channel):  # nobody here, but a dropped member may return
                    self.fanout.announce_member(channel, added, data_json, except_id)
                return
            turns = self._turns[channel] = _PresenceTurns(newest)
        if turns.fresh(user, version):
            self.fanout.announce_member(channel, added, data_json, except_id)

    # -- turns ------------------------------------------------------------------------
    def in_turn(self, channel: str, step: Callable[[], None]) -> None:
        """``step`` once the presence operations asked for on ``channel`` so far are done
        (the channel's vacated after its last member's leaving)."""
        self._in_turn(channel, step)

    def _in_turn(self, channel: str, operation: PresenceOperation) -> asyncio.Future[Any]:
        """Run ``operation`` once every presence operation asked for before it on ``channel``
        here is done; the future resolves to what it returned (None when it failed)."""
        turns = self._turns.get(channel)
        if turns is None:
            turns = self._turns[channel] = _PresenceTurns(self._newest_version)
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
        if channel not in self.rooms:
            del self._turns[channel]

    async def _changed(self, channel: str, members: list[Member] | None = None) -> None:
        if self.lifecycle.wants(PresenceChanged):
            await self.lifecycle.deliver(PresenceChanged(channel, members))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for presence writes in flight (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
