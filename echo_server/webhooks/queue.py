"""Per endpoint: the events waiting, and the one batch in flight.

A batch is formed once (its id, its body with ``time_ms``, frozen) and sent until the
endpoint takes it or its retry time runs out: a redelivery carries the same id and the same
bytes, so a receiver can drop a repeat by ``X-Webhook-Id``. Batches to one endpoint go out
one at a time, in order.

``MemoryQueue`` serves one instance. ``RedisQueue`` keeps the events and the batch in flight
in Redis, and a lease (a key with an expiry) lets one instance at a time deliver for an
endpoint: when the instance that holds it dies, the lease runs out and another instance
takes the same batch over. Both are bounded: over ``max_queue`` waiting events, new ones are
dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..core.presence import LuaScript
from .settings import DeliverySettings

log = logging.getLogger("echo_server.webhooks")

MAX_APPEND = 500  # events per Redis call


@dataclass(frozen=True, slots=True)
class Batch:
    id: str
    body: bytes
    events: int
    first_try_ms: int  # when it was formed: its retry time counts from here
    attempts: int = 0  # failed so far (the backoff grows with them, whichever instance)


def _body(time_ms: int, events: list[str]) -> bytes:
    return f'{{"time_ms":{time_ms},"events":[{",".join(events)}]}}'.encode()


def _now_ms() -> int:
    return int(time.time() * 1000)


class MemoryQueue:
    def __init__(self, settings: DeliverySettings) -> None:
        self.settings = settings
        self._events: deque[tuple[float, str]] = deque()
        self._inflight: Batch | None = None
        self._next = 0.0  # monotonic time before which the batch in flight is not retried
        self.dropped = 0  # events refused because the queue was full

    def append(self, event_json: str) -> bool:
        if len(self._events) >= self.settings.max_queue:
            self.dropped += 1
            return False
        self._events.append((time.monotonic(), event_json))
        return True

    async def length(self) -> int:
        return self.waiting

    @property
    def waiting(self) -> int:
        """Events not yet taken by the endpoint."""
        return len(self._events) + (self._inflight.events if self._inflight else 0)

    async def claim(self) -> Batch | None:
        """The batch to send now, or None when nothing is due."""
        if self._inflight is not None:
            return self._inflight if time.monotonic() >= self._next else None
        events, settings = self._events, self.settings
        if not events or (len(events) < settings.batch_size and
                          time.monotonic() - events[0][0] < settings.batch_ms / 1000):
            return None
        taken = [events.popleft()[1] for _ in range(min(settings.batch_size, len(events)))]
        now = _now_ms()
        self._inflight = Batch(secrets.token_hex(12), _body(now, taken), len(taken), now)
        return self._inflight

    async def ack(self, batch: Batch) -> None:
        if self._inflight is not None and self._inflight.id == batch.id:
            self._inflight = None

    async def defer(self, batch: Batch, delay: float) -> None:
        """It failed: try again in ``delay`` seconds."""
        if self._inflight is not None and self._inflight.id == batch.id:
            self._inflight = Batch(batch.id, batch.body, batch.events, batch.first_try_ms,
                                   batch.attempts + 1)
            self._next = time.monotonic() + delay

    async def close(self) -> None:
        return None


# KEYS: events list. ARGV: max queue, items... Returns how many were refused.
_APPEND = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local refused = 0
for i = 2, #ARGV do
  if room > 0 then redis.call('RPUSH', KEYS[1], ARGV[i]); room = room - 1
  else refused = refused + 1 end
end
return refused
"""

# KEYS: events list, batch hash, lease. ARGV: instance, lease ms, now ms, batch ms, batch size,
# new batch id. Returns {id, body, count, first_try, next, attempts} of the batch to send, or
# {'', events waiting} when another instance holds the lease or nothing is due. Events are
# stored as "<at ms> <json>".
_CLAIM = """
local n = redis.call('LLEN', KEYS[1])
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return {'', n} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local b = redis.call('HMGET', KEYS[2], 'id', 'body', 'count', 'first', 'next', 'attempts')
if b[1] then
  if tonumber(ARGV[3]) < tonumber(b[5]) then return {'', n + tonumber(b[3])} end
  return b
end
if n == 0 then return {'', 0} end
local size = tonumber(ARGV[5])
if n < size then
  local head = redis.call('LINDEX', KEYS[1], 0)
  local at = tonumber(string.match(head, '^(%d+) '))
  if tonumber(ARGV[3]) - at < tonumber(ARGV[4]) then return {'', n} end
end
local items = redis.call('LRANGE', KEYS[1], 0, size - 1)
redis.call('LTRIM', KEYS[1], #items, -1)
local events = {}
for i, item in ipairs(items) do
  events[i] = string.sub(item, string.find(item, ' ', 1, true) + 1)
end
local body = '{"time_ms":' .. ARGV[3] .. ',"events":[' .. table.concat(events, ',') .. ']}'
redis.call('HSET', KEYS[2], 'id', ARGV[6], 'body', body, 'count', #items, 'first', ARGV[3],
           'next', '0', 'attempts', '0')
return {ARGV[6], body, tostring(#items), ARGV[3], '0', '0'}
"""

# KEYS: batch hash. ARGV: batch id. Delivered (or given up): gone, if still the one in flight.
_ACK = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: batch hash. ARGV: batch id, next attempt (ms). Only the batch still in flight.
_DEFER = """
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[2])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""


class RedisQueue:
    """Shared by every instance on one Redis. Appends are written by one task, in order, a
    few hundred per round trip: the lifecycle listener that appends never waits."""

    def __init__(self, settings: DeliverySettings, client: Any, prefix: str,
                 instance_id: str) -> None:
        self.settings = settings
        self.client = client
        self.instance_id = instance_id
        self.events_key, self.batch_key, self.lease_key = (
            f"{prefix}:events", f"{prefix}:batch", f"{prefix}:lease")
        self._append = LuaScript(client, _APPEND)
        self._claim = LuaScript(client, _CLAIM)
        self._ack = LuaScript(client, _ACK)
        self._defer = LuaScript(client, _DEFER)
        self._pending: list[str] = []
        self.waiting = 0  # events not yet taken, as the last claim saw them (for /metrics)
        self._ready = asyncio.Event()
        self._writer = asyncio.ensure_future(self._write())
        self.dropped = 0

    def append(self, event_json: str) -> bool:
        if len(self._pending) >= self.settings.max_queue:
            self.dropped += 1  # Redis is not keeping up: bounded here too
            return False
        self._pending.append(f"{_now_ms()} {event_json}")
        self._ready.set()
        return True

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                chunk = self._pending[:MAX_APPEND]
                try:
                    refused = int(await self._append([self.events_key],
                                                     [self.settings.max_queue, *chunk]))
                except Exception as exc:
                    log.warning("webhook events not queued in Redis (%s); retrying", exc)
                    await asyncio.sleep(self.settings.poll)
                    continue
                del self._pending[:len(chunk)]
                self.dropped += refused

    async def length(self) -> int:
        waiting, count = await asyncio.gather(self.client.llen(self.events_key),
                                              self.client.hget(self.batch_key, "count"))
        return int(waiting) + int(count or 0) + len(self._pending)

    async def claim(self) -> Batch | None:
        s = self.settings
        # Held while this instance keeps claiming (every poll); one POST long past that,
        # so a dead holder's endpoint is taken over within seconds.
        lease_ms = int((s.timeout + 2 * s.poll + 1) * 1000)
        found = await self._claim(
            [self.events_key, self.batch_key, self.lease_key],
            [self.instance_id, lease_ms, _now_ms(), int(s.batch_ms), s.batch_size,
             secrets.token_hex(12)])
        values = [v.decode() if isinstance(v, bytes) else v for v in found]
        if not values[0]:
            self.waiting = int(values[1]) + len(self._pending)
            return None
        ident, body, count, first, _next, attempts = values
        self.waiting = int(count) + len(self._pending)
        return Batch(ident, body.encode(), int(count), int(first), int(attempts))

    async def ack(self, batch: Batch) -> None:
        await self._ack([self.batch_key], [batch.id])

    async def defer(self, batch: Batch, delay: float) -> None:
        await self._defer([self.batch_key], [batch.id, _now_ms() + int(delay * 1000)])

    async def close(self) -> None:
        """Whatever is still to be appended goes to Redis first (a clean stop loses
        nothing another instance could deliver)."""
        if self._pending:
            self._ready.set()
            for _ in range(50):
                if not self._pending:
                    break
                await asyncio.sleep(0.02)
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
