"""Laravel's Redis broadcasts: ``PSUBSCRIBE <keyPrefix>*``, one prefix stripped; and the
publisher that writes exactly what Laravel's RedisBroadcaster writes.

This is exactly what laravel-echo-server does, so the same ``keyPrefix``
setting means the same thing. The classic gotcha (Laravel prefixes channels
with ``<app>_database_`` and the echo server was given no ``keyPrefix``) is
detected and explained once in the log.

URLs: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=0``,
``redis+sentinel://[user:password@]host:port[,host2:port2]/service_name[/db]``
(``?sentinel_password=`` when the Sentinels want one) and
``redis+cluster://[user:password@]host:port[,host2:port2]`` (``rediss+cluster://`` for TLS; a
Cluster has database 0 only). ``?prefix=`` sets the channel prefix in the URL (it wins over
``databaseConfig.redis.keyPrefix``), the same way for the source and the publisher.

On a Cluster, a plain ``PUBLISH`` (Laravel's, inside its ``EVAL``) reaches the subscribers of
every node, so the source subscribes on any one node and moves to another when that one goes
away.

About 450 lines: the source and the publisher share URL parsing for plain, Sentinel and
Cluster URLs, and the detection of the prefix gotcha.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from echo_common.jsoncodec import dumps

from ..event import BadMessage, BroadcastEvent, encode_laravel_message, parse_laravel_message
from .base import EventSource, Publisher, option_float, split_options
from .redis_wire import RedisReplyError, RedisSubscriber

log = logging.getLogger("broadcaster.redis")

# Laravel's default prefix: Str::slug(APP_NAME, '_').'_database_' (Laravel 13: '-database-').
_LARAVEL_PREFIX = re.compile(r"^([a-z0-9_]+_database_|[a-z0-9-]+-database-)(.+)$")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
MAX_BATCH = 1000
# Channels of echo-server's own traffic between instances; never routed to clients.
INTERNAL_PREFIX = b"echo-server#"
OPTIONS = ("prefix", "connect_timeout", "sentinel_password")

# RedisBroadcaster::broadcastMultipleChannelsScript(): every channel in one atomic call.
PUBLISH_SCRIPT = """for i = 2, #ARGV do
  redis.call('publish', ARGV[i], ARGV[1])
end"""


class RedisPubSubSource(EventSource):
    kind = "redis"

    def __init__(self, url: str, key_prefix: str = "", **options: Any) -> None:
        super().__init__(url)
        self._url, url_options = split_options(url, OPTIONS)
        self.key_prefix = url_options.get("prefix", key_prefix)
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self.options = options
        self.endpoint = subscriber_endpoint(url, self.connect_timeout)
        self._subscriber: RedisSubscriber | None = None
        self._hinted = False

    @property
    def pattern(self) -> str:
        # Unlike the reference, glob characters in the prefix are escaped.
        return _GLOB_SPECIAL.sub(r"\\\1", self.key_prefix) + "*"

    async def server_url(self) -> str:
        """The Redis to subscribe to; Sentinel asks its Sentinels, on every (re)connect."""
        return await self.endpoint.server_url()

    async def connect(self) -> None:
        await self.close()
        self._subscriber = RedisSubscriber(await self.server_url(), self.connect_timeout)
        await self._subscriber.connect()
        await self.endpoint.connected(self._subscriber)

    async def subscribe(self) -> None:
        assert self._subscriber is not None
        await self._subscriber.psubscribe(self.pattern)

    async def next_batch(self) -> list[BroadcastEvent]:
        subscriber = self._subscriber
        if subscriber is None:
            raise ConnectionError("not connected")
        batch: list[BroadcastEvent] = []
        for reply in await subscriber.read(MAX_BATCH):
            # ["pmessage", pattern, channel, data]; anything else is a confirmation.
            if type(reply) is list and len(reply) == 4 and reply[0] == b"pmessage":
                event = self._decode(reply[2], reply[3])
                if event is not None:
                    batch.append(event)
        return batch

    def _decode(self, raw_channel: bytes, data: bytes) -> BroadcastEvent | None:
        if raw_channel.startswith(INTERNAL_PREFIX):
            return None  # the server's own cross-instance traffic, not a broadcast
        try:
            channel = raw_channel.decode("utf-8")[len(self.key_prefix):]
        except UnicodeDecodeError:
            self.on_bad_message("bad_message", "channel name is not UTF-8")
            return None
        if not self.key_prefix and not self._hinted:
            self._hint_prefix(channel)
        try:
            return parse_laravel_message(channel, data)
        except BadMessage as exc:
            self.on_bad_message(exc.kind, f"redis channel {channel!r}: {exc}")
            return None

    def _hint_prefix(self, channel: str) -> None:
        match = _LARAVEL_PREFIX.match(channel)
        if match:
            self._hinted = True
            # The snippet is JSON (not Python's repr quoting) so it can be pasted as is.
            log.warning(
                "Events arrive on %r, which looks like Laravel's Redis prefix %r plus the channel "
                "%r, but no keyPrefix is configured: Echo clients subscribed to %r will not "
                "receive them. Set \"databaseConfig\": {\"redis\": {\"keyPrefix\": %s}} in "
                "laravel-echo-server.json (the value of Laravel's database.redis.options.prefix).",
                channel, match.group(1), match.group(2), match.group(2), dumps(match.group(1)))

    async def close(self) -> None:
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            subscriber.close()


# --------------------------------------------------------------------------- Sentinel

SENTINEL_SCHEMES = ("redis+sentinel",)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _server_url(scheme: str, username: str | None, password: str | None, host: str, port: int,
                db: int = 0) -> str:
    auth = ""
    if password:
        auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    elif username:
        auth = f"{quote(username, safe='')}@"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{auth}{host}:{port}/{db}"


def _parse_hosts(hostlist: str, default_port: int) -> list[tuple[str, int]]:
    """``host:port[,host2:port2]`` (``[v6]:port`` too), as several-host URLs write them."""
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = item.partition(":")
        hosts.append((host, int(port) if port else default_port))
    return hosts


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def sentinel(self, timeout: float, **connection_kwargs: Any) -> Any:
        """A redis-py Sentinel; ``connection_kwargs`` go to the master's connections."""
        from redis.asyncio.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout,
                                           "socket_connect_timeout": timeout}
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        connection_kwargs.setdefault("socket_timeout", timeout)
        connection_kwargs.setdefault("socket_connect_timeout", timeout)
        return Sentinel(self.sentinels, sentinel_kwargs=sentinel_kwargs, **connection_kwargs)

    async def discover_master(self, timeout: float) -> tuple[str, int]:
        """Ask the Sentinels now (no cached answer: this runs on every reconnect)."""
        sentinel = self.sentinel(timeout)
        try:
            host, port = await sentinel.discover_master(self.service)
        finally:
            for client in sentinel.sentinels:
                await client.aclose()
        return str(host), int(port)

    def master_url(self, host: str, port: int) -> str:
        return _server_url("redis", self.username, self.password, host, port, self.db)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[user:password@]host:port[,host2:port2]/service_name[/db]``; the
    password is the master's (``?sentinel_password=`` for the Sentinels themselves)."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = _parse_hosts(hostlist, 26379)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not sentinels or not path:
        raise ValueError(f"{url!r}: expected redis+sentinel://host:port[,host:port]/"
                         "service_name[/db]")
    query = dict(parse_qsl(parts.query))
    return SentinelTarget(sentinels=sentinels, service=path[0],
                          db=int(path[1]) if len(path) > 1 else int(query.get("db", 0)),
                          username=unquote(username) or None,
                          password=unquote(password) or None,
                          sentinel_password=query.get("sentinel_password") or None)


# --------------------------------------------------------------------------- Cluster

@dataclass(frozen=True)
class ClusterTarget:
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def node_url(self, host: str, port: int) -> str:
        return _server_url("rediss" if self.tls else "redis", self.username, self.password,
                           host, port)

    def client(self, **kwargs: Any) -> Any:
        """A redis-py ``RedisCluster`` seeded with these nodes (it learns the others)."""
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
                            username=self.username, password=self.password, ssl=self.tls,
                            **kwargs)


def parse_cluster_url(url: str) -> ClusterTarget:
    """``redis+cluster://[user:password@]host:port[,host2:port2]`` (``rediss+cluster://`` for
    TLS): a few nodes of the Cluster to start from. There is no database number: a Cluster has
    only database 0."""
    parts = urlsplit(url)
    if _scheme(url) not in CLUSTER_SCHEMES:
        raise ValueError(f"{url!r}: expected redis+cluster:// or rediss+cluster://")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = _parse_hosts(hostlist, 6379)
    if not nodes:
        raise ValueError(f"{url!r}: expected redis+cluster://host:port[,host:port]")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"{url!r}: a Redis Cluster has database 0 only")
    return ClusterTarget(nodes=nodes, username=unquote(username) or None,
                         password=unquote(password) or None,
                         tls=_scheme(url) == "rediss+cluster")


def parse_cluster_nodes(reply: Any, default_host: str) -> list[tuple[str, int]]:
    """The reachable-looking nodes of a ``CLUSTER NODES`` reply (failed, handshaking and
    address-less nodes left out); a node that does not know its own address reports an
    empty one, which is the one we talked to."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    nodes: list[tuple[str, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or any(flag in fields[2] for flag in ("fail", "noaddr", "handshake")):
            continue
        address = fields[1].split("@", 1)[0]
        host, _, port = address.rpartition(":")
        if not port.isdigit() or port == "0":
            continue
        host = host.strip("[]") or default_host
        nodes.append((host, int(port)))
    return nodes


# --------------------------------------------------------------------------- where to subscribe

class Endpoint:
    """The Redis server a subscriber connects to, decided again on every (re)connect: for a
    plain URL always the same, for Sentinel the master named right now, for a Cluster the next
    node. So a failover or a dead node costs one reconnect, never a restart."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def server_url(self) -> str:
        return self.url

    async def connected(self, subscriber: RedisSubscriber) -> None:
        """Learn what a fresh connection can tell (a Cluster node names the others)."""


class SentinelEndpoint(Endpoint):
    def __init__(self, url: str, connect_timeout: float) -> None:
        super().__init__(url)
        self.target = parse_sentinel_url(url)
        self.connect_timeout = connect_timeout
        self.master: tuple[str, int] | None = None

    async def server_url(self) -> str:
        host, port = await self.target.discover_master(self.connect_timeout)
        if self.master is not None and self.master != (host, port):
            log.warning("Sentinel service %r moved from %s:%s to %s:%s", self.target.service,
                        *self.master, host, port)
        self.master = (host, port)
        return self.target.master_url(host, port)


class ClusterEndpoint(Endpoint):
    """Any node will do (a plain PUBLISH reaches every node's subscribers); start at a random
    one so instances spread over the nodes, and move round the known nodes on each
    reconnect, so the next attempt after a node died goes elsewhere."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.target = parse_cluster_url(url)
        self.nodes = list(dict.fromkeys(self.target.nodes))
        self._next = random.randrange(len(self.nodes))
        self.node: tuple[str, int] | None = None

    async def server_url(self) -> str:
        self.node = self.nodes[self._next % len(self.nodes)]
        self._next = (self._next + 1) % len(self.nodes)
        return self.target.node_url(*self.node)

    async def connected(self, subscriber: RedisSubscriber) -> None:
        try:
            reply = await subscriber.command("CLUSTER", "NODES")
        except RedisReplyError as exc:
            if "cluster support disabled" in str(exc):
                raise RedisReplyError(f"{self.node} is not a Redis Cluster node "
                                      f"(redis+cluster:// needs one): {exc}") from None
            # An ACL user without CLUSTER NODES still subscribes; it just knows the seeds only.
            log.debug("CLUSTER NODES refused (%s); reconnecting to the URL's nodes only", exc)
            return
        assert self.node is not None
        for node in parse_cluster_nodes(reply, self.node[0]):
            if node not in self.nodes:
                self.nodes.append(node)


def subscriber_endpoint(url: str, connect_timeout: float = 5.0) -> Endpoint:
    """Where a subscriber for ``url`` connects (our query options are dropped)."""
    scheme = _scheme(url)
    if scheme in SENTINEL_SCHEMES:
        return SentinelEndpoint(url, connect_timeout)
    if scheme in CLUSTER_SCHEMES:
        return ClusterEndpoint(url)
    return Endpoint(split_options(url, OPTIONS)[0])


class RedisSentinelSource(RedisPubSubSource):
    """The same subscriber, pointed at whatever master the Sentinels name right now: asked
    again on every reconnect, so a failover is one short outage, not a dead source."""

    @property
    def target(self) -> SentinelTarget:
        assert isinstance(self.endpoint, SentinelEndpoint)
        return self.endpoint.target

    @property
    def master(self) -> tuple[str, int] | None:
        assert isinstance(self.endpoint, SentinelEndpoint)
        return self.endpoint.master


class RedisClusterSource(RedisPubSubSource):
    """Subscribed on one node of a Redis Cluster; another one after that node goes away."""

    @property
    def node(self) -> tuple[str, int] | None:
        assert isinstance(self.endpoint, ClusterEndpoint)
        return self.endpoint.node


# --------------------------------------------------------------------------- publishing

def publisher_options(connect_timeout: float) -> dict[str, Any]:
    """redis-py's asyncio client does not retry by default: the first command after a Redis
    restart would fail on the pooled connection although Redis is back. Retry a few times
    (a fresh connection each time), briefly."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    return {"socket_connect_timeout": connect_timeout,
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)}


class RedisPublisher(Publisher):
    """``PUBLISH <prefix><channel> <message>`` with the very bytes Laravel publishes; several
    channels go in one EVAL of Laravel's own script, so they are published atomically."""

    def __init__(self, url: str, key_prefix: str = "", **options: Any) -> None:
        super().__init__(url, **options)
        self._url, url_options = split_options(url, OPTIONS)
        self.prefix = url_options.get("prefix", key_prefix)
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self._client: Any = None
        self._sentinel: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            if _scheme(self._url) in CLUSTER_SCHEMES:
                # PUBLISH and a keyless EVAL may run on any node of a Cluster.
                self._client = parse_cluster_url(self._url).client(
                    **publisher_options(self.connect_timeout))
            elif _scheme(self._url) in SENTINEL_SCHEMES:
                target = parse_sentinel_url(self.url)
                self._sentinel = target.sentinel(self.connect_timeout)
                self._client = self._sentinel.master_for(
                    target.service, db=target.db, username=target.username,
                    password=target.password, **publisher_options(self.connect_timeout))
            else:
                import redis.asyncio as aioredis

                self._client = aioredis.Redis.from_url(
                    self._url, **publisher_options(self.connect_timeout))
        return self._client

    async def publish(self, channels: Sequence[str], event: str,
                      data: Mapping[str, Any] | None, socket: str | None) -> None:
        message = encode_laravel_message(event, data, socket)
        names = [self.prefix + channel for channel in channels]
        client = self._redis()
        if len(names) == 1:
            await client.publish(names[0], message)
        elif names:
            await client.eval(PUBLISH_SCRIPT, 0, message, *names)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            for sentinel_client in sentinel.sentinels:
                await sentinel_client.aclose()
