"""What was sent on each channel lately, so a client that lost its connection can be given
what it missed.

Every packet fan-out sends on a channel that a recoverable connection is in (or was in, and
may come back to) gets the next number of one sequence (its offset) and is kept here: the
event's name, its data (the same bytes fan-out wrote, not a copy) and whom it excluded.
Memory is bounded per channel (packets) and in all (bytes), and by age (the recovery
window); whatever is dropped raises the channel's ``evicted`` mark, so a gap that reaches
below it is known to be incomplete and recovery fails instead of handing over part of it.
A channel's record lives while something references it (``retain``/``release``): a live
connection in it, or a disconnected session that may still come back.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from .positions import Positions

ENTRY_OVERHEAD = 120  # bytes an entry costs besides its data, roughly (the object, deques)


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    window: float = 120.0  # seconds a packet is kept (the recovery window)
    max_per_channel: int = 1000
    max_bytes: int = 64 * 1024 * 1024


class Entry:
    __slots__ = ("at", "channel", "data_json", "event", "exclude", "offset", "seq", "size")

    def __init__(self, seq: int, channel: str, event: str, data_json: str | bytes,
                 exclude: str | None, at: float, offset: int | str = 0) -> None:
        self.seq = seq
        self.offset = offset or seq  # what the client was sent (core.positions)
        self.channel = channel
        self.event = event
        self.data_json = data_json
        self.exclude = exclude  # a connection id that did not get it (Laravel's toOthers)
        self.at = at
        self.size = len(data_json) + len(event) + ENTRY_OVERHEAD


class ChannelHistory:
    """One recorded channel. Most of them never get a packet while they are recorded (an
    attacker's channels, or those a parked session holds), so the deque (624 bytes empty)
    comes with the first one."""

    __slots__ = ("entries", "evicted", "refs")

    def __init__(self, floor: int) -> None:
        self.entries: deque[Entry] | None = None
        # Every packet up to this offset is gone from here (or came before the record).
        self.evicted = floor
        self.refs = 0


class History:
    def __init__(self, limits: HistoryLimits | None = None,
                 positions: Positions | None = None) -> None:
        self.limits = limits or HistoryLimits()
        self.seq = 0
        self.bytes = 0
        self.count = 0  # entries held
        self.channels: dict[str, ChannelHistory] = {}
        # Oldest first, across channels; may still hold entries already dropped from their
        # channel (skipped when they reach the front; compacted when they pile up).
        self._order: deque[tuple[ChannelHistory, Entry]] = deque()
        # With recovery on other instances: offsets also say where this instance was in the
        # stream and the relay.
        self.positions = positions

    # -- which channels are recorded ---------------------------------------------------
    def retain(self, channel: str) -> None:
        record = self.channels.get(channel)
        if record is None:
            record = self.channels[channel] = ChannelHistory(self.seq)
        record.refs += 1

    def release(self, channel: str) -> None:
        record = self.channels.get(channel)
        if record is None:
            return
        record.refs -= 1
        if record.refs <= 0:
            del self.channels[channel]
            entries = record.entries
            if entries:
                for entry in entries:
                    self.bytes -= entry.size
                self.count -= len(entries)
                entries.clear()

    # -- recording ---------------------------------------------------------------------
    def record(self, channel: str, event: str, data_json: str | bytes,
               exclude: str | None) -> int | str:
        """The packet's offset; 0 when the channel is not recorded (nobody could recover
        on it, and no offset is sent)."""
        record = self.channels.get(channel)
        if record is None:
            return 0
        self.seq = seq = self.seq + 1
        positions = self.positions
        offset = seq if positions is None else positions.offset(seq)
        entry = Entry(seq, channel, event, data_json, exclude, time.monotonic(), offset)
        entries = record.entries
        if entries is None:
            entries = record.entries = deque()
        entries.append(entry)
        self._order.append((record, entry))
        self.bytes += entry.size
        self.count += 1
        limits = self.limits
        if len(entries) > limits.max_per_channel:
            self._drop(entries.popleft(), record)
        self._trim(entry.at)
        return offset

    def _trim(self, now: float) -> None:
        limits = self.limits
        window_start = now - limits.window
        queue = self._order
        while queue:
            record, entry = queue[0]
            if entry.at >= window_start and self.bytes <= limits.max_bytes:
                break
            queue.popleft()
            if record.entries and record.entries[0] is entry:
                record.entries.popleft()
                self._drop(entry, record)
            # else: already dropped (per-channel bound, or the channel was released)
        if len(queue) > 2 * self.count + 1024:
            self._order = deque(sorted(
                ((record, entry) for record in self.channels.values()
                 for entry in record.entries or ()), key=lambda item: item[1].seq))

    def _drop(self, entry: Entry, record: ChannelHistory) -> None:
        self.bytes -= entry.size
        self.count -= 1
        if entry.seq > record.evicted:
            record.evicted = entry.seq

    # -- reading -------------------------------------------------------------------------
    def since(self, channel: str, after: int, exclude: str) -> list[Entry] | None:
        """The packets on ``channel`` after offset ``after`` that ``exclude`` was to get;
        None when some of them are gone (or the channel is not recorded)."""
        record = self.channels.get(channel)
        if record is None or record.evicted > after:
            return None
        self._trim(time.monotonic())
        if record.evicted > after:
            return None
        return [e for e in record.entries or () if e.seq > after and e.exclude != exclude]
