"""Several instances on one Redis behave as one server.

Laravel's broadcasts already reach every instance (each PSUBSCRIBEs), and
toOthers works wherever the sender sits (each instance excludes it if it is
local). What one instance must tell the others is only what *clients* cause:
whispers and presence joining/leaving. Those go through one relay channel.

Each instance also keeps a liveness key with a TTL and a snapshot of its
figures; the HTTP API sums the snapshots of live instances, and the first
instance to notice that another one died (its liveness key expired) removes
that instance's presence members and announces their ``presence:leaving``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from broadcaster.jsoncodec import dumps, loads
from broadcaster.sources.redis import INTERNAL_PREFIX
from broadcaster.sources.redis_wire import RedisSubscriber

from .presence import RedisPresenceStore

log = logging.getLogger("echo_server.cluster")

def relay_channel(key_prefix: str) -> str:
    """Not under keyPrefix, so Laravel's `PSUBSCRIBE <keyPrefix>*` never sees it (with an
    empty keyPrefix the Redis source skips it by its prefix); per keyPrefix, so deployments
    sharing one Redis under different prefixes never hear each other."""
    return f"{INTERNAL_PREFIX.decode()}{key_prefix}relay"

RoomEmitter = Callable[[str, str, str, str | None], int]


class Cluster:
    def __init__(self, client: Any, redis_url: str, instance_id: str, *, key_prefix: str = "",
                 heartbeat_interval: float = 5.0, liveness_ttl: float = 15.0,
                 emit_local: RoomEmitter, snapshot: Callable[[], dict[str, Any]],
                 presence: RedisPresenceStore | None = None) -> None:
        self.client = client
        self.redis_url = redis_url
        self.instance_id = instance_id
        self.key_prefix = key_prefix
        self.heartbeat_interval = heartbeat_interval
        self.liveness_ttl = liveness_ttl
        self.emit_local = emit_local
        self.snapshot = snapshot
        self.presence = presence
        self._outbox: list[str] = []
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel = relay_channel(key_prefix)
        self.relayed_in = 0
        self.relayed_out = 0

    # -- keys --------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.key_prefix + "echo-server:" + ":".join(parts)

    @property
    def instances_key(self) -> str:
        return self._key("instances")

    def alive_key(self, instance_id: str) -> str:
        return self._key("alive", instance_id)

    def stats_key(self, instance_id: str) -> str:
        return self._key("stats", instance_id)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._beat()
        if self.presence is not None:
            # A restarted instance with a stable id: its previous life's members are stale.
            await self._purge(self.instance_id)
        self._tasks = [asyncio.create_task(self._heartbeat(), name="cluster heartbeat"),
                       asyncio.create_task(self._receive(), name="cluster relay in"),
                       asyncio.create_task(self._send(), name="cluster relay out")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.client.delete(self.alive_key(self.instance_id),
                                     self.stats_key(self.instance_id))
            await self.client.srem(self.instances_key, self.instance_id)

    # -- relay -------------------------------------------------------------------------
    def relay(self, room: str, event: str, data_json: str, except_id: str | None) -> None:
        """Hand a client-caused emit to the other instances (sync: called on the hot path
        of a whisper; one writer task pipelines the queue)."""
        self._outbox.append(dumps({"i": self.instance_id, "r": room, "e": event,
                                   "d": data_json, "x": except_id}))
        self._outbox_ready.set()

    def emit(self, room: str, event: str, data_json: str, except_id: str | None = None) -> int:
        count = self.emit_local(room, event, data_json, except_id)
        self.relay(room, event, data_json, except_id)
        return count

    async def _send(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            if not batch:
                continue
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self.channel, message)
                    await pipe.execute()
                self.relayed_out += len(batch)
            except Exception as exc:
                log.warning("cluster relay: could not publish %d messages: %s", len(batch), exc)

    async def _receive(self) -> None:
        delay = 0.1
        while True:
            subscriber = RedisSubscriber(self.redis_url)
            try:
                await subscriber.connect()
                await subscriber.subscribe(self.channel)
                delay = 0.1
                while True:
                    for reply in await subscriber.read(1000):
                        if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                            self._deliver(reply[2])
            except asyncio.CancelledError:
                subscriber.close()
                raise
            except Exception as exc:
                subscriber.close()
                log.warning("cluster relay subscription lost (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _deliver(self, raw: bytes) -> None:
        try:
            message = loads(raw)
            if message["i"] == self.instance_id:
                return
            self.relayed_in += 1
            self.emit_local(message["r"], message["e"], message["d"], message.get("x"))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cluster relay: dropped a malformed message: %s", exc)

    # -- liveness and figures ---------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
                await self._reap()
            except Exception as exc:
                log.warning("cluster heartbeat failed: %s", exc)

    async def _beat(self) -> None:
        ttl_ms = max(1, int(self.liveness_ttl * 1000))
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.alive_key(self.instance_id), str(time.time()), px=ttl_ms)
            pipe.set(self.stats_key(self.instance_id), dumps(self.snapshot()), px=ttl_ms)
            pipe.sadd(self.instances_key, self.instance_id)
            await pipe.execute()

    async def _reap(self) -> None:
        """Remove instances whose liveness key expired: exactly one survivor wins each."""
        for raw in await self.client.smembers(self.instances_key):
            other = raw.decode() if isinstance(raw, bytes) else str(raw)
            if other == self.instance_id or await self.client.exists(self.alive_key(other)):
                continue
            if await self.client.srem(self.instances_key, other):
                log.warning("instance %s stopped sending heartbeats: removing its members", other)
                await self._purge(other)

    async def _purge(self, instance_id: str) -> None:
        if self.presence is None:
            return
        for channel, member in await self.presence.purge_instance(instance_id):
            self.emit(channel, "presence:leaving", dumps(member.public()))

    async def peers(self) -> list[dict[str, Any]]:
        """Snapshots of the *other* live instances."""
        ids = [r.decode() if isinstance(r, bytes) else str(r)
               for r in await self.client.smembers(self.instances_key)]
        others = [i for i in ids if i != self.instance_id]
        if not others:
            return []
        values = await self.client.mget([self.stats_key(i) for i in others])
        return [loads(v) for v in values if v]

