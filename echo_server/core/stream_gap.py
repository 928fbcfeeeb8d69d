"""The stream, read again for recoveries from another instance: what a client missed is the
stream's entries between its place and where this instance's own delivery stands.

After an instance dies its clients come back at once, mostly from the same place: the reads
are shared (one read for all who ask the same at the same time; full chunks kept, since a
stream only grows at its end), and at most ``MAX_READING`` Redis reads of recoveries run at a
time (the others wait in line, not for the connection pool that presence and the cluster
share, which would give up).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from broadcaster.event import BroadcastEvent

from .positions import Positions, StreamPlace, stream_place
from .recovery import RecoveryRefused

log = logging.getLogger("echo_server.stream_gap")

# Entries of the stream from an entry id (inclusive), at most ``count``: (id, its events,
# numbered as the source numbers them). Raises when the stream cannot be read.
LogReader = Callable[[str, int], Awaitable[list[tuple[str, list[BroadcastEvent]]]]]
# The same, each entry and event with its place: [(entry place, [(event place, event)])].
Chunk = list[tuple[StreamPlace, list[tuple[StreamPlace, BroadcastEvent]]]]

READ_CHUNK = 500
KEPT_CHUNKS = 32  # full chunks kept
MAX_READING = 16  # Redis reads of recoveries at a time
MAX_READS = 50  # chunks of the stream one recovery may read


class StreamGap:
    def __init__(self, positions: Positions, read_log: LogReader, catch_up: float) -> None:
        self.positions = positions
        self.read_log = read_log
        self.catch_up = catch_up
        self.reading = asyncio.Semaphore(MAX_READING)  # the session lookups take it too
        self.failing = False  # logged once per outage
        self._reads: dict[tuple[str, int], asyncio.Future[Chunk]] = {}
        self._chunks: OrderedDict[tuple[str, int], Chunk] = OrderedDict()

    async def read(self, start: str, count: int) -> Chunk:
        """``read_log``, once for all the recoveries that ask the same at the same time; a
        full chunk is kept (entries are only ever added after it), a short one is not."""
        key = (start, count)
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            return chunk
        reading = self._reads.get(key)
        if reading is None:
            reading = self._reads[key] = asyncio.ensure_future(self._fetch(start, count))
            reading.add_done_callback(lambda done: self._read_done(key, done))
        try:
            chunk = await asyncio.shield(reading)
        except Exception as exc:
            self.failed(exc)
            raise RecoveryRefused("unavailable") from None
        if len(chunk) == count:
            self._chunks[key] = chunk
            if len(self._chunks) > KEPT_CHUNKS:
                self._chunks.popitem(last=False)
        return chunk

    def _read_done(self, key: tuple[str, int], done: asyncio.Future[Chunk]) -> None:
        self._reads.pop(key, None)
        if not done.cancelled():
            done.exception()  # its waiters report it; retrieved even when they all left

    def failed(self, exc: Exception) -> None:
        if not self.failing:
            log.warning("Redis not read for a recovery from another instance (%s): such "
                        "recoveries fail until it answers", exc)
        self.failing = True

    async def _fetch(self, start: str, count: int) -> Chunk:
        chunk: Chunk = []
        async with self.reading:
            entries = await self.read_log(start, count)
        for entry_id, events in entries:
            place = stream_place(entry_id)
            if place is not None:
                chunk.append((place, [(stream_place(event.id or "") or place, event)
                                      for event in events]))
        return chunk

    async def caught_up(self, target: StreamPlace) -> None:
        """This instance's stream delivery must have passed the client's place, or what
        it delivers next would repeat what the client has (a restarted instance reads its
        backlog after a warm-up). A place the stream does not hold is refused at once: a
        made-up offset must not hold a connection for the whole wait."""
        if (stream_place(self.positions.stream) or (0, 0, 0)) >= target:
            return
        held = await self.read(f"{target[0]}-{target[1]}", 1)
        if not held or held[0][0] != (target[0], target[1], 0):
            raise RecoveryRefused("bad_offset")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.catch_up
        while (stream_place(self.positions.stream) or (0, 0, 0)) < target:
            delivered = loop.create_future()
            self.positions.waiting.append(delivered)
            try:
                await asyncio.wait_for(delivered, deadline - loop.time())
            except TimeoutError:
                raise RecoveryRefused("behind") from None

    async def missed(self, after: dict[str, tuple[StreamPlace, int]], connection_id: str,
                     most: int) -> list[BroadcastEvent]:
        """The stream's events after ``after[channel]`` on each channel that ``connection_id``
        was to get, up to where this instance's delivery stands (the rest reaches it live)."""
        start = min(place for place, _ in after.values())
        cursor = f"{start[0]}-{start[1]}"
        missed: list[tuple[StreamPlace, BroadcastEvent]] = []
        last: StreamPlace = start
        for reads in range(MAX_READS):
            chunk = await self.read(cursor, READ_CHUNK)
            if reads == 0 and (not chunk or chunk[0][0] != (start[0], start[1], 0)):
                raise RecoveryRefused("history_evicted")  # trimmed from the stream
            for _entry, events in chunk:
                for place, event in events:
                    channel_after = after.get(event.channel)
                    if (channel_after is not None and place > channel_after[0]
                            and event.socket != connection_id):
                        missed.append((place, event))
            if len(missed) > most:
                raise RecoveryRefused("history_evicted")
            if chunk:
                last = chunk[-1][0]
                cursor = f"{last[0]}-{last[1] + 1}"
            here = stream_place(self.positions.stream) or (0, 0, 0)
            if (last[0], last[1]) >= (here[0], here[1]):
                # What this instance delivered is all in: the rest comes live.
                return [event for place, event in missed if place <= here]
        raise RecoveryRefused("behind")
