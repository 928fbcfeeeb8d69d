"""Channel occupied / vacated for the whole server, from each instance's own.

An instance knows when a channel gets its first and loses its last subscriber *here*
(``LocalChannelOccupied``/``Vacated``). With one instance that is the server's fact. With
several, each instance counts in Redis the channels it holds (one hash of counts, and a set
per instance of what it counted), in Lua scripts: the change that takes a count
from 0 to 1 is the channel's ``ChannelOccupied``, from 1 to 0 its ``ChannelVacated``, whichever
instance makes it, so each fact is told once. When an instance dies, the one that purges it
takes its channels back out of the counts and tells the vacated ones (webhooks'
``channel_vacated`` after a ``kill -9``).

What waits to be counted is the net change per channel, never a queue of changes: a channel
occupied and vacated again before its change was written has nothing to write (and nothing to
tell), so subscribe/unsubscribe churn makes the counting lag, never the memory grow. At most
one entry per channel this instance holds or has just left; one Lua call writes a batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .events import (
    ChannelOccupied,
    ChannelVacated,
    Lifecycle,
    LocalChannelOccupied,
    LocalChannelVacated,
)
from .presence import LuaScript

log = logging.getLogger("echo_server.core.occupancy")

# KEYS[1] = the counts hash, KEYS[2] = this instance's set; ARGV = channel, 1 or -1, channel,
# 1 or -1, ... Returns each channel's new count, or -1 when this instance had already counted
# that change.
_CHANGES = """
local counts = {}
for i = 1, #ARGV, 2 do
  local channel, n = ARGV[i], -1
  if ARGV[i + 1] == '1' then
    if redis.call('SADD', KEYS[2], channel) == 1 then
      n = redis.call('HINCRBY', KEYS[1], channel, 1)
    end
  elseif redis.call('SREM', KEYS[2], channel) == 1 then
    n = redis.call('HINCRBY', KEYS[1], channel, -1)
    if n <= 0 then redis.call('HDEL', KEYS[1], channel); n = 0 end
  end
  counts[#counts + 1] = n
end
return counts
"""
BATCH = 500  # channel changes per Lua call

# KEYS[1] = the counts hash, KEYS[2] = the dead instance's set. Returns the channels vacated.
_PURGE = """
local vacated = {}
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HINCRBY', KEYS[1], channel, -1) <= 0 then
    redis.call('HDEL', KEYS[1], channel)
    table.insert(vacated, channel)
  end
end
redis.call('DEL', KEYS[2])
return vacated
"""


class Occupancy:
    """Alone, an instance's own facts are the server's; once ``share`` is called (the
    cluster layer, over Redis), changes are counted there, in this instance's order (one
    writer task, so a channel's +1 and -1 never cross)."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        lifecycle.on(LocalChannelOccupied, self._local)
        lifecycle.on(LocalChannelVacated, self._local)
        # channel -> its change not yet written (+1 or -1; a change undone is no entry)
        self.pending: dict[str, int] | None = None
        self._ready = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._changes: LuaScript | None = None
        self._purge: LuaScript | None = None
        self.counts_key = self.tag = self.instance_id = ""

    def _local(self, event: LocalChannelOccupied | LocalChannelVacated) -> None:
        delta = 1 if isinstance(event, LocalChannelOccupied) else -1
        pending = self.pending
        if pending is None:
            self._tell(event.channel, delta)
            return
        net = pending.pop(event.channel, 0) + delta
        if net:
            pending[event.channel] = net
            self._ready.set()

    def _tell(self, channel: str, delta: int) -> None:
        kind = ChannelOccupied if delta > 0 else ChannelVacated
        if self.lifecycle.wants(kind):
            self.lifecycle.emit(kind(channel))

    # -- shared through Redis -------------------------------------------------------------
    def instance_key(self, instance_id: str) -> str:
        return f"{self.tag}:occupied-by:{instance_id}"

    async def share(self, client: Any, tag: str, instance_id: str) -> None:
        """Count in Redis from now on (the cluster layer calls it at start, before clients
        come); a previous life of this instance id is purged first: its channels are not
        held any more."""
        self.counts_key, self.tag, self.instance_id = f"{tag}:occupancy", tag, instance_id
        self._changes = LuaScript(client, _CHANGES)
        self._purge = LuaScript(client, _PURGE)
        await self.purge(instance_id)
        self.pending = {}
        self._writer = asyncio.ensure_future(self._write())

    async def stop(self) -> None:
        """A clean stop: this instance's channels leave the counts (what is still queued
        goes with them)."""
        if self._writer is None:
            return
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None
        await self.purge(self.instance_id)

    async def _write(self) -> None:
        assert self.pending is not None
        keys = [self.counts_key, self.instance_key(self.instance_id)]
        pending = self.pending
        while True:
            await self._ready.wait()
            self._ready.clear()
            while pending:
                # What is pending now, in order; what changes meanwhile waits its turn.
                # (Popping a large dict from the front would scan its dead entries again
                # for every batch.)
                changes = list(pending.items())
                pending.clear()
                for start in range(0, len(changes), BATCH):
                    await self._count(keys, changes[start:start + BATCH])

    async def _count(self, keys: list[str], batch: list[tuple[str, int]]) -> None:
        assert self._changes is not None
        args: list[str | int] = []
        for channel, delta in batch:
            args += (channel, delta)
        try:
            counts = await self._changes(keys, args)
        except Exception as exc:
            # Logged; the purge of this instance (its death, or its next clean stop) puts
            # the counts right again.
            log.warning("occupancy of %d channels not counted in Redis: %s", len(batch), exc)
            return
        for (channel, delta), count in zip(batch, counts, strict=True):
            if int(count) == (1 if delta > 0 else 0):
                self._tell(channel, delta)

    async def purge(self, instance_id: str) -> None:
        """``instance_id`` is gone: its channels leave the counts; those it held alone are
        vacated."""
        if self._purge is None:
            return
        vacated = await self._purge([self.counts_key, self.instance_key(instance_id)], [])
        for raw in vacated or ():
            self._tell(raw.decode() if isinstance(raw, bytes) else str(raw), -1)
