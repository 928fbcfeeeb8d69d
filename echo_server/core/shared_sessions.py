"""Recovery on another instance: a client whose instance died or restarted comes back to
another one and still gets every packet it missed, or a clean refusal.

That can only be whole when every packet of the gap was recorded where the new instance can
read it: the events of the Redis stream source are (every instance reads the same entries,
under the same ids); whispers, presence changes and API publishes travel the cluster relay,
which records nothing. So:

- each recoverable session that is in a channel has a record in Redis (its socket id, JWT
  subject, channels and where it joined them, and the instance that owns it), kept while it
  is connected and for the recovery window after its connection drops (half a window more
  when its instance died and could not say when);
- offsets carry the sender's place in the stream and in the relay's numbering
  (``core.positions``), and every relay message marks its channel with its number;
- the new instance recovers only when no relay message went to one of the session's
  channels after the client's place (the marks say), and replays the stream's entries from
  that place up to where its own delivery stands, so that what it sends live next follows
  without a gap or a repeat.

A presence channel always changes with a drop (members leave when their instance dies), so a
session in one is not recovered elsewhere (the reason says so).

All of this holds only for an instance in the cluster: one outside it (Redis did not answer
at its start) marks none of its relay messages, so a record it wrote would let another
instance replay the stream's part of a gap and miss the rest. Built before the core, the
sessions are started with the cluster; never started, they record, offer and take over
nothing, and their clients recover on their own instance only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broadcaster.event import BroadcastEvent
from echo_common.jsoncodec import dumps, loads

from ..apps.tags import app_tag
from .cluster import unrecorded_key
from .names import is_presence
from .positions import StreamPlace, offset_parts, split_place
from .recovery import RecoveryRefused
from .stream_gap import StreamGap
from .tasks import cancel_tasks

log = logging.getLogger("echo_server.shared_sessions")

# KEYS[1] the session; ARGV: owner, record ('' keeps the one there), lifetime (ms), force.
# Only the owner (or nobody yet) writes, so a late write of an instance the client has left
# never overwrites the record of the one it went to; a take-over forces.
_PUT = """local owner = redis.call('hget', KEYS[1], 'o')
if owner and owner ~= ARGV[1] and ARGV[4] ~= '1' then return 0 end
if ARGV[2] ~= '' then
  redis.call('hset', KEYS[1], 'o', ARGV[1], 'r', ARGV[2])
elseif not owner then
  return 0
end
redis.call('pexpire', KEYS[1], ARGV[3])
return 1"""
_DROP = """if redis.call('hget', KEYS[1], 'o') == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0"""
WRITE_BATCH = 500


@dataclass(slots=True)
class Handover:
    """A session taken over from another instance, ready to be restored here."""

    token: str
    connection_id: str
    channels: list[str]
    missed: list[BroadcastEvent]


class _Write:
    """What to write for a session when the writer gets to it: its record as ``places``
    holds it then (built once however many joins came before), or, with no
    ``connection_id``, only a new lifetime for the record Redis has."""

    __slots__ = ("connection_id", "force", "lifetime", "subject")

    def __init__(self, connection_id: str | None, subject: object, lifetime: int,
                 force: bool) -> None:
        self.connection_id = connection_id
        self.subject = subject
        self.lifetime = lifetime
        self.force = force


class SharedSessions:
    def __init__(self, client: Any, tag: str, instance_id: str, gap: StreamGap, *,
                 window: float, max_packets: int) -> None:
        self.client = client
        self.tag = tag
        # This process, not just its instance id: an instance restarted under the same id has
        # lost its memory of the sessions its previous life owned, and takes them over.
        self.owner_id = f"{instance_id}/{secrets.token_hex(4)}"
        self.gap = gap
        self.positions = gap.positions
        self.window_ms = max(1, int(window * 1000))
        self.live_ms = self.window_ms * 3 // 2  # refreshed every half window while connected
        self.max_packets = max_packets
        self.places: dict[str, dict[str, str]] = {}  # token -> channel -> where it joined
        self._live: set[str] = set()  # tokens of connected sessions with a record
        self._pending: dict[str, _Write | None] = {}  # token -> latest write (None: drop)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.running = False  # from `start` (with the cluster) to `stop`

    def key(self, token: str) -> str:
        return f"{self.tag}:session:{token}"

    # -- the owner's side -----------------------------------------------------------------
    def joined(self, token: str, connection_id: str, subject: object, channel: str) -> None:
        if not self.running:  # no record, so nothing after it (left, parked, ended) either
            return
        places = self.places.setdefault(token, {})
        places[channel] = self.positions.here()
        self._write(token, connection_id, subject)

    def left(self, token: str, connection_id: str, subject: object, channel: str) -> None:
        places = self.places.get(token)
        if places is None or places.pop(channel, None) is None:
            return
        if places:
            self._write(token, connection_id, subject)
        else:
            self.ended(token)

    def _write(self, token: str, connection_id: str, subject: object,
               force: bool = False) -> None:
        self._live.add(token)
        self._queue(token, _Write(connection_id, subject, self.live_ms, force))

    def parked(self, token: str) -> None:
        """Its connection dropped: the window starts now."""
        if token in self._live:
            self._live.discard(token)
            self._queue(token, _Write(None, None, self.window_ms, False))

    def ended(self, token: str) -> None:
        """Closed by its client, or over: nobody may recover it any more."""
        self._live.discard(token)
        if self.places.pop(token, None) is not None:
            self._queue(token, None)

    def forget(self, token: str) -> None:
        """This process stops (its sessions stay in Redis, for other instances)."""
        self._live.discard(token)
        self.places.pop(token, None)

    def _queue(self, token: str, write: _Write | None) -> None:
        previous = self._pending.pop(token, None)
        if write is not None and previous is not None:
            write.force = write.force or previous.force  # a take-over still to land
            if write.connection_id is None:  # a new lifetime: the record still to write stays
                write.connection_id, write.subject = previous.connection_id, previous.subject
        self._pending[token] = write
        self._idle.clear()
        self._ready.set()

    # -- tasks ------------------------------------------------------------------------------
    def start(self) -> None:
        """Once this instance is in the cluster (see the module's docstring)."""
        self._tasks = [asyncio.create_task(self._writer(), name="session records"),
                       asyncio.create_task(self._refresher(), name="session refresh")]
        self.running = True

    async def stop(self, timeout: float) -> None:
        """What is still to be written (the sessions a shutdown just parked) goes first."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        await cancel_tasks(self._tasks)
        self._tasks = []
        self.running = False

    async def _writer(self) -> None:
        """Everything queued goes in pipelines (a reconnect wave writes thousands at once);
        EVAL rather than EVALSHA, so a pipeline never meets NOSCRIPT."""
        failing = False
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch: list[tuple[str, _Write | None]] = []
                while self._pending and len(batch) < WRITE_BATCH:
                    token = next(iter(self._pending))
                    batch.append((token, self._pending.pop(token)))
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for token, write in batch:
                            if write is None:
                                pipe.eval(_DROP, 1, self.key(token), self.owner_id)
                            else:
                                pipe.eval(_PUT, 1, self.key(token), self.owner_id,
                                          self._record(token, write), write.lifetime,
                                          "1" if write.force else "0")
                        await pipe.execute()
                except Exception as exc:
                    if not failing:  # once per outage
                        log.warning("session records of recoverable connections not written "
                                    "(%s): they recover on this instance only", exc)
                    failing = True
                else:
                    if failing:
                        log.info("session records are written again")
                    failing = False
            self._idle.set()

    def _record(self, token: str, write: _Write) -> str:
        """The record's JSON; '' (the one in Redis stays) for a new lifetime only, or when
        this process no longer holds the session's channels (it is stopping)."""
        places = self.places.get(token)
        if write.connection_id is None or places is None:
            return ""
        return dumps({"id": write.connection_id, "sub": write.subject, "ch": places})

    async def _refresher(self) -> None:
        """Connected sessions' records outlive the window only by this: a crash then leaves
        them for one window and a half at most."""
        while True:
            await asyncio.sleep(self.window_ms / 2000)
            tokens = list(self._live)
            for start in range(0, len(tokens), 1000):
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for token in tokens[start:start + 1000]:
                            pipe.pexpire(self.key(token), self.live_ms)
                        await pipe.execute()
                except Exception as exc:
                    log.warning("session records not refreshed: %s", exc)
                    break

    # -- the new instance's side ----------------------------------------------------------
    async def owner(self, token: str) -> tuple[str, dict[str, Any]] | None:
        """Who holds ``token``'s session, and its record; None when no record is there (or
        Redis cannot say, or this instance is outside the cluster: then only this instance's
        own memory can recover it)."""
        if not self.running:
            return None
        try:
            async with self.gap.reading:
                owner, record = await self.client.hmget(self.key(token), ["o", "r"])
        except Exception as exc:
            self.gap.failed(exc)
            return None
        self.gap.failing = False
        if owner is None or record is None:
            return None
        try:
            parsed = loads(record)
        except ValueError:
            return None
        owner = owner.decode() if isinstance(owner, bytes) else str(owner)
        return (owner, parsed) if isinstance(parsed, dict) else None

    async def take_over(self, token: str, record: dict[str, Any], offset: object,
                        subject: object, tag: str = "") -> Handover:
        """What the session missed since ``offset`` (or since it joined), from the stream;
        RecoveryRefused when that cannot be whole, or when the session's channels are not
        all of the app ``tag`` names (apps/tags.py: the connection's). Finishes (without
        awaiting anything more) where this instance's own delivery stands: the caller joins
        the connection in the same step, so the next stream event reaches it live."""
        channels = record.get("ch")
        if not isinstance(channels, dict) or not all(isinstance(c, str) for c in channels):
            raise RecoveryRefused("unknown_session")
        if any(app_tag(channel) != tag for channel in channels):
            raise RecoveryRefused("other_app")
        if record.get("sub") != subject:
            raise RecoveryRefused("other_user")
        if any(is_presence(channel) for channel in channels):
            raise RecoveryRefused("presence")
        after = self._places(channels, offset)
        watch = self.positions.watch(frozenset(after))
        try:
            try:
                async with self.gap.reading:
                    marks = await self.client.mget([unrecorded_key(self.tag, c) for c in after])
            except Exception as exc:
                self.gap.failed(exc)
                raise RecoveryRefused("unavailable") from None
            for channel, mark in zip(after, marks, strict=True):
                if mark is not None and int(mark) > after[channel][1]:
                    raise RecoveryRefused("unrecorded")  # a whisper or publish went by
            await self.gap.caught_up(max(place for place, _ in after.values()))
            missed = await self.gap.missed(after, str(record.get("id")),
                                           self.max_packets * len(after))
            if watch.touched:
                raise RecoveryRefused("unrecorded")
        finally:
            self.positions.unwatch(watch)
        connection_id = record.get("id")
        if not isinstance(connection_id, str):
            raise RecoveryRefused("unknown_session")
        return Handover(token, connection_id, list(after), missed)

    def claim(self, token: str, connection_id: str, subject: object,
              channels: Iterable[str]) -> None:
        """This instance owns the session now (its joins then write as usual)."""
        self.places[token] = dict.fromkeys(channels, self.positions.here())
        self._write(token, connection_id, subject, force=True)

    def _places(self, channels: dict[str, Any], offset: object
                ) -> dict[str, tuple[StreamPlace, int]]:
        """Per channel, the place after which the client misses packets."""
        client = None
        if offset is not None:
            try:
                _, rest = offset_parts(offset) if isinstance(offset, str) else (0, "")
            except ValueError:
                rest = ""
            client = split_place(rest)
            if client is None:
                raise RecoveryRefused("bad_offset")
        after: dict[str, tuple[StreamPlace, int]] = {}
        for channel, joined in channels.items():
            place = split_place(joined) if isinstance(joined, str) else None
            if place is None:  # joined before this cluster delivered any stream event
                if client is None:
                    raise RecoveryRefused("no_position")
                place = client
            elif client is not None:
                place = (max(place[0], client[0]), max(place[1], client[1]))
            after[channel] = place
        return after
