"""Where this instance is in the two orders every instance shares, so that a client's offset
says what it got in terms another instance understands (recovery on another instance).

- ``stream``: the last stream entry fanned out (``<ms>-<seq>``, ``~k`` for an entry's k-th
  channel after the first). The stream delivers entries in id order, so a packet sent at
  ``stream`` S follows every entry up to S on its channels.
- ``relay``: the number of the last cluster relay message handled (whispers, presence
  changes, API publishes: the packets no stream records). Redis numbers them as they are
  published and pub/sub hands them over in that order, so a packet sent at ``relay`` N
  follows every relay message numbered up to N.

A recoverable packet's offset is then ``<local seq>.<stream>.<relay>``: the local sequence
for recovery here, the two positions for recovery elsewhere.
"""

from __future__ import annotations

import asyncio

MAX_OFFSET_LENGTH = 80


class Watch:
    """Channels a recovery from another instance is about to join: whether a packet that no
    stream records went to one of them meanwhile (the joining connection would miss it)."""

    __slots__ = ("channels", "touched")

    def __init__(self, channels: frozenset[str]) -> None:
        self.channels = channels
        self.touched = False


class Positions:
    __slots__ = ("_here", "_here_at", "relay", "stream", "waiting", "watched")

    def __init__(self) -> None:
        self.stream = ""  # nothing delivered yet: no place another instance could start from
        self.relay = 0
        self._here = ""  # the last place ``here`` made, and the positions it was made at
        self._here_at: tuple[str, int] = ("", -1)
        # channel -> the watches on it (empty while no recovery from elsewhere is under way:
        # fan-out tests only that).
        self.watched: dict[str, list[Watch]] = {}
        # Recoveries waiting for this instance's stream delivery to reach a client's place;
        # fan-out wakes them after each batch it delivers (only while there are some).
        self.waiting: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        waiting, self.waiting = self.waiting, []
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def watch(self, channels: frozenset[str]) -> Watch:
        watch = Watch(channels)
        for channel in channels:
            self.watched.setdefault(channel, []).append(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        for channel in watch.channels:
            watches = self.watched[channel]
            watches.remove(watch)
            if not watches:
                del self.watched[channel]

    def unrecorded(self, channel: str) -> None:
        """A packet no stream records goes to ``channel`` now (fan-out calls this only
        while a watch is on)."""
        for watch in self.watched.get(channel, ()):
            watch.touched = True

    def offset(self, seq: int) -> str:
        return f"{seq}.{self.stream}.{self.relay}"

    def here(self) -> str:
        """The place of a join: what the connection got so far is what came before it. The
        same string for every join at one place (a session's record holds one per channel:
        10,000 channels joined at once share it)."""
        stream, relay = self.stream, self.relay
        at = self._here_at
        if at[0] is not stream or at[1] != relay:
            self._here_at = (stream, relay)
            self._here = f"{stream}.{relay}"
        return self._here


StreamPlace = tuple[int, int, int]  # (ms, seq, k)


def stream_place(text: str) -> StreamPlace | None:
    """``<ms>-<seq>[~k]`` as a tuple that orders like the stream; None when malformed."""
    entry, _, part = text.partition("~")
    ms, dash, seq = entry.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit() and (not part or part.isdigit())
            and ms.isascii() and seq.isascii() and part.isascii()):
        return None
    return int(ms), int(seq), int(part or 0)


def split_place(text: str) -> tuple[StreamPlace, int] | None:
    """``<stream>.<relay>`` (a join's place, or an offset without its local part)."""
    stream, dot, relay = text.rpartition(".")
    if not dot or not relay.isascii() or not relay.isdigit():
        return None
    place = stream_place(stream)
    return None if place is None else (place, int(relay))


def offset_parts(text: str) -> tuple[int, str]:
    """An offset's local sequence, and the rest (``""`` for a plain, one-instance offset);
    raises ValueError when it is no offset of ours."""
    if not (0 < len(text) <= MAX_OFFSET_LENGTH and text.isascii()):
        raise ValueError(text)
    seq, _, rest = text.partition(".")
    if not seq.isdigit():
        raise ValueError(text)
    return int(seq), rest
