"""Several instances on one Redis behave as one server.

Laravel's broadcasts already reach every instance (each PSUBSCRIBEs), and
toOthers works wherever the sender sits (each instance excludes it if it is
local). What one instance must tell the others is only what *clients* cause:
whispers and presence joining/leaving. Those go through one relay channel.

An event published through one instance's HTTP API goes through the relay only while
another instance may be listening: the instances set says so at every heartbeat, and an
instance that starts says so at once on a channel of its own (``hello_channel``) before it
accepts clients, so a lone instance publishes at the cost of a local delivery.

Each instance also keeps a liveness key with a TTL and a snapshot of its
figures; the HTTP API sums the snapshots of live instances, and the first
instance to notice that another one died (its liveness key expired) removes
that instance's presence members and announces their ``presence:leaving``.
Its connections under a bound that every instance shares (an app's ``maxConnections``)
go beside them at each heartbeat, and come back summed over the others (``elsewhere``),
for a bound checked at an upgrade without a round trip.

The same on Sentinel and on a Redis Cluster: the client (`redis_client.make_client`) follows
the master or the slot map; the relay's subscriber asks where to connect on every reconnect
(`subscriber_endpoint`: the master the Sentinels name now, the next Cluster node). On a Cluster
a plain PUBLISH reaches the subscribers of every node, so any node will do; the keys share one
hash tag (`key_tag`), so the multi-key reads stay in one slot.

About 520 lines because the relay's two directions, the heartbeat, the shared counts and the
purge of a dead instance all read one view of the others (``_others_until``, the liveness
keys, the instances set): split, each part would need the others' state handed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from broadcaster.event import BroadcastEvent
from broadcaster.sources.redis import INTERNAL_PREFIX, Endpoint, subscriber_endpoint
from broadcaster.sources.redis_wire import RedisSubscriber
from echo_common.jsoncodec import dumps, loads

from .occupancy import Occupancy
from .positions import Positions
from .presence import LuaScript, Member, RedisPresenceStore, key_tag
from .tasks import cancel_tasks

log = logging.getLogger("echo_server.cluster")

def unrecorded_key(tag: str, room: str) -> str:
    """The number of the last relay message to ``room`` (a packet no stream records)."""
    return f"{tag}:unrecorded:{room}"


def relay_channel(key_prefix: str) -> str:
    """Not under keyPrefix, so Laravel's `PSUBSCRIBE <keyPrefix>*` never sees it (with an
    empty keyPrefix the Redis source skips it by its prefix); per keyPrefix, so deployments
    sharing one Redis under different prefixes never hear each other."""
    return f"{INTERNAL_PREFIX.decode()}{key_prefix}relay"


def hello_channel(key_prefix: str) -> str:
    """Where a starting instance says it listens (its id): apart from the relay, so that
    instances of earlier versions, which do not subscribe to it, never see it."""
    return relay_channel(key_prefix) + ":hello"


RoomEmitter = Callable[[str, str, str, str | None], int]
# Writes this instance's presence members again (announcing their joining, when told to);
# returns how many it wrote.
PresenceRestorer = Callable[[bool], Awaitable[int]]
# Tells this instance's connections of a presence change written elsewhere: (channel,
# added, member JSON, version).
PresenceAnnouncer = Callable[[str, bool, str, int], None]
# A dead instance's member whose user has no connection left: (channel, member, version).
PresencePurged = Callable[[str, Member, int], None]
# How a presence change travels in the relay (the names predate the wire-neutral core and
# stay, so that instances of both versions hear each other during a rolling upgrade).
_JOINING, _LEAVING = "presence:joining", "presence:leaving"
MAX_OUTBOX = 50_000  # relay messages queued while Redis is slow or away

# ``publish`` (the hello), through redis-py: the relay itself goes through ``_publish_plain``.
# One round trip per batch, on any topology: a Cluster pipeline refuses PUBLISH (it has no key
# to route by). KEYS[1] is never touched: it only routes the script, on a Cluster, to the node
# of our hash tag (the one presence and heartbeats need anyway, rather than a random node that
# may be down), and a PUBLISH on any node reaches the subscribers of every node.
_PUBLISH_BATCH = """for i = 2, #ARGV do
  redis.call('publish', ARGV[1], ARGV[i])
end
return #ARGV - 1"""
# With recovery on other instances, each message is also numbered (in publish order) and its
# room marked with the number, for as long as a recovery may ask (core.positions): KEYS[1]
# is the counter; ARGV: relay channel, marker key prefix, marker lifetime (ms), then pairs of
# room and message. The number goes into the message's JSON, which instances that predate it
# ignore.
_PUBLISH_NUMBERED = """local n = 0
for i = 4, #ARGV, 2 do
  n = redis.call('incr', KEYS[1])
  redis.call('set', ARGV[2] .. ARGV[i], n, 'px', ARGV[3])
  redis.call('publish', ARGV[1], '{"n":' .. n .. ',' .. string.sub(ARGV[i + 1], 2))
end
return n"""
MAX_RELAY_BATCH = 500
RELAY_CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ClusterFeeds:
    """What the cluster hands the other instances' messages to, and reads its figures from:
    the core and the server, which are built after the cluster (the core takes the cluster's
    relay at construction), so these come with ``start``."""

    emit_local: RoomEmitter
    deliver: Callable[[list[BroadcastEvent]], int]
    snapshot: Callable[[], dict[str, Any]]
    announce_presence: PresenceAnnouncer
    purged: PresencePurged
    presence: RedisPresenceStore | None = None
    restore_presence: PresenceRestorer | None = None
    occupancy: Occupancy | None = None
    # This instance's connections under a bound every instance shares, by name (an app's:
    # ``apps.seats.seat_name``): told the others at each heartbeat (``Cluster.elsewhere``).
    counts: Callable[[], dict[str, int]] | None = None


class Cluster:
    """Built before the core, from the configuration; started once Redis answered, with
    what it feeds. Never started (Redis did not answer at start), it relays nothing."""

    feeds: ClusterFeeds  # from ``start``: nothing reads it before

    def __init__(self, client: Any, redis_url: str, instance_id: str, *, key_prefix: str = "",
                 heartbeat_interval: float = 5.0, liveness_ttl: float = 15.0,
                 positions: Positions | None = None, marker_ttl_ms: int = 0,
                 siblings: Collection[str] = ()) -> None:
        self.client = client
        self.redis_url = redis_url
        self.instance_id = instance_id
        self.key_prefix = key_prefix
        self.heartbeat_interval = heartbeat_interval
        self.liveness_ttl = liveness_ttl
        self.running = False
        self._beaten = False  # a first beat landed: from then on a missing key means a loss
        self.restored = 0  # presence memberships written again after a loss (logged; tests)
        self._outbox: list[tuple[str, str]] = []  # (room, message)
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel = relay_channel(key_prefix)
        self.hello = hello_channel(key_prefix)
        # Until when another instance may be listening (monotonic): broadcasts are relayed
        # only before then. Moved on by every sign of one (heartbeat set, hello, relay).
        self._others_until = 0.0
        self._listening = asyncio.Event()  # the relay subscription is up, hello said
        # Our own relay messages come back to us: told apart by their first bytes.
        self._own_prefix = b'{"i":' + dumps(instance_id).encode() + b","
        self.tag = key_tag(key_prefix)
        self._publish_batch = LuaScript(client, _PUBLISH_BATCH)
        self._publish_numbered = LuaScript(client, _PUBLISH_NUMBERED)
        # With recovery on other instances: relay messages are numbered, and this instance's
        # place in their order is kept here (core.positions); each room's mark lives this long.
        self.positions = positions
        self.marker_ttl_ms = marker_ttl_ms
        # Where the relay subscriber is connected (a server URL), None while it is not.
        self.relay_server: str | None = None
        self.relayed_in = 0
        self.dropped = 0
        self.relayed_out = 0
        # The relay's publishing connection (``_publish_plain``), made when first needed.
        self._out: RedisSubscriber | None = None
        self._out_endpoint: Endpoint | None = None
        # The other live instances' counts (``ClusterFeeds.counts``) as last read, summed,
        # and when. ``siblings``: the instances whose counts this one holds exactly already
        # (the other workers of its server, `apps/quota.py`), never added in.
        self._elsewhere: Counter[str] = Counter()
        self._counted_at = 0.0
        self.siblings = frozenset(siblings) | {instance_id}

    # -- keys --------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.tag + ":" + ":".join(parts)

    @property
    def instances_key(self) -> str:
        return self._key("instances")

    def alive_key(self, instance_id: str) -> str:
        return self._key("alive", instance_id)

    def stats_key(self, instance_id: str) -> str:
        return self._key("stats", instance_id)

    def counts_key(self, instance_id: str) -> str:
        return self._key("counts", instance_id)

    def reaped_key(self, instance_id: str) -> str:
        """Left by the instance that purged ``instance_id``'s members, for that instance to
        find if it comes back: its members' leaving was announced, so their return must be."""
        return self._key("reaped", instance_id)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, feeds: ClusterFeeds) -> None:
        self.feeds = feeds
        await self._beat()
        if feeds.occupancy is not None:
            await feeds.occupancy.share(self.client, self.tag, self.instance_id)
        if feeds.presence is not None:
            # A restarted instance with a stable id: its previous life's members are stale.
            await self._purge(self.instance_id)
        self._tasks = [asyncio.create_task(self._heartbeat(), name="cluster heartbeat"),
                       asyncio.create_task(self._receive(), name="cluster relay in"),
                       asyncio.create_task(self._send(), name="cluster relay out")]
        self.running = True

    async def listening(self) -> None:
        """Until the relay listens and the other instances know it (at most a few seconds:
        when Redis is slow, the subscription is retried meanwhile). The server awaits it
        before it takes clients, once its hooks are on the cluster."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 2 * RELAY_CONNECT_TIMEOUT)

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        await cancel_tasks(self._tasks)
        self._tasks = []
        if self._out is not None:
            self._out.close()
            self._out = None
        if self.feeds.occupancy is not None:
            with contextlib.suppress(Exception):
                await self.feeds.occupancy.stop()
        with contextlib.suppress(Exception):
            await self.client.delete(self.alive_key(self.instance_id),
                                     self.stats_key(self.instance_id),
                                     self.counts_key(self.instance_id))
            await self.client.srem(self.instances_key, self.instance_id)

    # -- relay -------------------------------------------------------------------------
    def relay(self, room: str, event: str, data_json: str, except_id: str | None) -> None:
        """Hand a client-caused emit to the other instances (sync: called on the hot path
        of a whisper; one writer task pipelines the queue). Bounded: while Redis hangs,
        the oldest are dropped rather than memory growing."""
        self._send_later({"i": self.instance_id, "r": room, "e": event, "d": data_json,
                          "x": except_id})

    def relay_broadcast(self, event: BroadcastEvent) -> None:
        """An event published through this instance's HTTP API: the others deliver it as
        if their own sources had read it (cache channels, history, delivery figures).
        Nothing to do while no other instance listens (numbered relays always go: their
        numbers order every instance's recovery)."""
        if self.positions is None and time.monotonic() >= self._others_until:
            return
        data = event.data if isinstance(event.data, str) else event.data.decode("utf-8")
        self._send_later({"i": self.instance_id, "r": event.channel, "e": event.event,
                          "d": data, "x": event.socket, "b": 1})

    def relay_presence(self, room: str, added: bool, data_json: str, version: int) -> None:
        """A presence announcement, with the version of the write it reports: the others
        tell their connections only what is later than what they told them already."""
        self._send_later({"i": self.instance_id, "r": room, "e": _JOINING if added else _LEAVING,
                          "d": data_json, "v": version})

    def _send_later(self, message: dict[str, Any]) -> None:
        if not self.running:  # never started, or stopped: nobody would send it
            return
        if len(self._outbox) >= MAX_OUTBOX:
            del self._outbox[:len(self._outbox) // 2]
            self.dropped += 1
            log.warning("cluster relay: Redis is not keeping up; dropped the oldest half of "
                        "%d queued messages", MAX_OUTBOX)
        self._outbox.append((message["r"], dumps(message)))
        self._outbox_ready.set()

    async def publish(self, channel: str, message: str) -> None:
        """PUBLISH through the node of our hash tag: on a Redis Cluster a plain PUBLISH goes
        to a random node, and fails while that one is down."""
        await self._publish_batch(keys=[self._key("relay")], args=[channel, message])

    async def _send(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            pending, self._outbox = self._outbox, []
            for start in range(0, len(pending), MAX_RELAY_BATCH):
                batch = pending[start:start + MAX_RELAY_BATCH]
                try:
                    if self.positions is None:
                        await self._publish_plain([m for _, m in batch])
                    else:
                        await self._publish_numbered(
                            keys=[self._key("relay", "number")],
                            args=[self.channel, unrecorded_key(self.tag, ""),
                                  self.marker_ttl_ms, *(x for pair in batch for x in pair)])
                    self.relayed_out += len(batch)
                except Exception as exc:
                    log.warning("cluster relay: could not publish %d messages: %s",
                                len(batch), exc)

    async def _publish_plain(self, messages: list[str]) -> None:
        """PUBLISHes pipelined on a connection of our own, where the subscriber would connect
        (on a Cluster any node will do; a PUBLISH reaches every node's subscribers): through
        redis-py, each API event's relay cost about 50 µs of this instance's CPU. A connection
        lost is made again once, at once, for the same messages, as redis-py's retry did."""
        commands = [("PUBLISH", self.channel, message) for message in messages]
        for attempt in range(2):
            out = self._out
            try:
                if out is None:
                    if self._out_endpoint is None:
                        self._out_endpoint = subscriber_endpoint(self.redis_url,
                                                                 RELAY_CONNECT_TIMEOUT)
                    out = RedisSubscriber(await self._out_endpoint.server_url(),
                                          RELAY_CONNECT_TIMEOUT)
                    await out.connect()
                    self._out = out
                await out.pipeline(commands)
                return
            except (ConnectionError, OSError, TimeoutError):
                if out is not None:
                    out.close()
                self._out = None
                if attempt:
                    raise

    async def _receive(self) -> None:
        """SUBSCRIBE to the relay channel; where is asked again on every reconnect, so a
        Sentinel failover or a dead Cluster node is one short gap, not a deaf instance."""
        endpoint = subscriber_endpoint(self.redis_url, RELAY_CONNECT_TIMEOUT)
        delay = 0.1
        while True:
            subscriber: RedisSubscriber | None = None
            try:
                subscriber = RedisSubscriber(await endpoint.server_url(), RELAY_CONNECT_TIMEOUT)
                await subscriber.connect()
                await endpoint.connected(subscriber)
                await subscriber.subscribe(self.channel, self.hello)
                self.relay_server = subscriber.url
                await self.publish(self.hello, self.instance_id)
                self._listening.set()
                delay = 0.1
                own, hello, me = self._own_prefix, self.hello.encode(), self.instance_id.encode()
                while True:
                    for reply in await subscriber.read(1000):
                        if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                            payload = reply[2]
                            if payload.startswith(own):
                                continue  # ours, unnumbered: nothing to learn from it
                            if reply[1] == hello:
                                if payload != me:
                                    self._others_seen()
                                continue
                            self._deliver(payload)
            except asyncio.CancelledError:
                self.relay_server = None
                if subscriber is not None:
                    subscriber.close()
                raise
            except Exception as exc:
                self.relay_server = None
                if subscriber is not None:
                    subscriber.close()
                log.warning("cluster relay subscription lost (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _deliver(self, raw: bytes) -> None:
        try:
            message = loads(raw)
            number = message.get("n")
            if type(number) is int and self.positions is not None:
                self.positions.relay = number  # in order, our own messages included
            if message["i"] == self.instance_id:
                return
            self._others_seen()
            self.relayed_in += 1
            version = message.get("v")
            feeds = self.feeds
            if message.get("b"):  # a broadcast that came in through another's HTTP API
                feeds.deliver([BroadcastEvent(message["r"], message["e"], message["d"],
                                              message.get("x"))])
            elif version is None:
                feeds.emit_local(message["r"], message["e"], message["d"], message.get("x"))
            else:
                feeds.announce_presence(message["r"], message["e"] == _JOINING, message["d"],
                                       version)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cluster relay: dropped a malformed message: %s", exc)

    def _others_seen(self) -> None:
        """Another instance is there: relay broadcasts for as long as it could stay silent
        and still be alive (its liveness TTL, plus a heartbeat for ours to notice)."""
        self._others_until = time.monotonic() + self.liveness_ttl + 2 * self.heartbeat_interval

    # -- liveness and figures ---------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Beat, then reap, but only after a full liveness TTL of our own beats landing: when
        Redis was away (a restart, a Sentinel failover taking longer than the TTL) every
        liveness key may have expired meanwhile, and the other instances need one TTL to beat
        again before their silence means anything. Otherwise the first instance back would
        purge the presence members of every other, live, instance."""
        healthy_since = last_beat = time.monotonic()
        failing = False
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                instances = await self._beat()
            except Exception as exc:
                if not failing:
                    log.warning("cluster heartbeat failed: %s", exc)
                failing = True
                continue
            now = time.monotonic()
            if failing:
                log.info("cluster heartbeat is back")
            # A failed beat or a beat that took long (redis-py retrying through a failover):
            # either way our own key may have lapsed, so may everybody's.
            if failing or now - last_beat > self.liveness_ttl:
                healthy_since = now
            failing = False
            last_beat = now
            if now - healthy_since < self.liveness_ttl:
                continue
            try:
                await self._reap(instances)
            except Exception as exc:
                log.warning("cluster heartbeat failed: %s", exc)

    async def _beat(self) -> Iterable[bytes | str]:
        """Renew our keys and read the instances set: returned for ``_reap``, which needs
        it right after."""
        ttl_ms = max(1, int(self.liveness_ttl * 1000))
        counts = self.feeds.counts
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(self.alive_key(self.instance_id))
            pipe.exists(self.reaped_key(self.instance_id))
            pipe.set(self.alive_key(self.instance_id), str(time.time()), px=ttl_ms)
            pipe.set(self.stats_key(self.instance_id), dumps(self.feeds.snapshot()), px=ttl_ms)
            if counts is not None:
                pipe.set(self.counts_key(self.instance_id), dumps(counts()), px=ttl_ms)
            pipe.sadd(self.instances_key, self.instance_id)
            pipe.delete(self.reaped_key(self.instance_id))
            pipe.smembers(self.instances_key)
            alive, reaped, *_, instances = await pipe.execute()
        if len(instances) > 1:  # dead ones count until reaped: relaying to nobody is harmless
            self._others_seen()
        if counts is not None:
            await self._read_counts(instances)
        first = not self._beaten
        self._beaten = True
        if not alive and not first:
            await self._recover(bool(reaped))
        return instances

    async def _read_counts(self, instances: Iterable[bytes | str]) -> None:
        """The other instances' counts, summed (a dead one's key expired with its liveness
        key: it counts none)."""
        others = [i for i in map(_text, instances) if i not in self.siblings]
        values = await self.client.mget([self.counts_key(i) for i in others]) if others else []
        total: Counter[str] = Counter()
        for value in values:
            try:
                counts = loads(value) if value else None
            except ValueError:
                continue  # not ours to read: counted as none
            if isinstance(counts, dict):
                total.update({name: count for name, count in counts.items()
                              if type(count) is int and count > 0})
        self._elsewhere, self._counted_at = total, time.monotonic()

    def elsewhere(self, name: str) -> int:
        """The other live instances' connections under ``name``'s bound, as they told them
        at their last heartbeats (up to one interval old, plus ours): read from memory, at
        an upgrade. None once the last read is a liveness TTL old (Redis away): their keys
        would have expired by then too."""
        if time.monotonic() - self._counted_at > self.liveness_ttl:
            return 0
        return self._elsewhere[name]

    async def _recover(self, reaped: bool) -> None:
        """Our liveness key was gone: Redis lost its data (a restart without persistence, a
        failover to a replica that lagged), or another instance purged us while we could not
        reach it. Either way our presence members may be missing from Redis: write them
        again, so ``here()`` and the API see every member that is still connected. When we
        were purged, the other instances announced these users leaving: announce their
        return."""
        feeds = self.feeds
        if feeds.presence is None or feeds.restore_presence is None:
            return
        restored = await feeds.restore_presence(reaped)
        self.restored += restored
        log.warning("this instance's liveness key was gone from Redis (%s): wrote its %d "
                    "presence memberships again", "purged by another instance" if reaped
                    else "Redis lost its data", restored)

    async def _reap(self, instances: Iterable[bytes | str]) -> None:
        """Remove instances whose liveness key expired (of ``instances``, the set as the
        beat just read it): exactly one survivor wins each."""
        for raw in instances:
            other = _text(raw)
            if other == self.instance_id or await self.client.exists(self.alive_key(other)):
                continue
            if await self.client.srem(self.instances_key, other):
                log.warning("instance %s stopped sending heartbeats: removing its members", other)
                await self.client.set(self.reaped_key(other), "1",
                                      px=max(1, int(self.liveness_ttl * 10_000)))
                await self._purge(other)

    async def _purge(self, instance_id: str) -> None:
        feeds = self.feeds
        if feeds.occupancy is not None and instance_id != self.instance_id:
            await feeds.occupancy.purge(instance_id)
        if feeds.presence is None:
            return
        for channel, member, version in await feeds.presence.purge_instance(instance_id):
            feeds.purged(channel, member, version)

    async def peers(self) -> list[dict[str, Any]]:
        """Snapshots of the *other* live instances."""
        ids = [_text(r) for r in await self.client.smembers(self.instances_key)]
        others = [i for i in ids if i != self.instance_id]
        if not others:
            return []
        values = await self.client.mget([self.stats_key(i) for i in others])
        return [loads(v) for v in values if v]



def _text(value: bytes | str) -> str:
    """An instance id as Redis hands it back (bytes, or str with decode_responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
