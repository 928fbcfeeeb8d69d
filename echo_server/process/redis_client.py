"""The server's own Redis client (presence, publishPresence, the cluster relay's publishing and
heartbeats), made in one place from one URL whatever the deployment looks like.

- ``redis://``, ``rediss://``, ``unix://``: a blocking pool, so a burst of presence writes
  waits for a connection instead of failing when all are busy (redis-py's default pool raises).
- ``redis+sentinel://host:port[,host:port]/service[/db]``: the master the Sentinels name,
  through redis-py's Sentinel-managed pool (blocking too): a connection asks the Sentinels
  again whenever it reconnects, and a command that fails on a dead or demoted master is retried
  on a fresh connection, so a failover needs no restart.
- ``redis+cluster://host:port[,host:port]`` (``rediss+cluster://``): redis-py's
  ``RedisCluster``, which follows the slot map. Every key of one Lua script must hash to one
  slot, which is why all of echo-server's keys share the hash tag of `presence.key_tag`.

The subscribing side (the relay's ``SUBSCRIBE``, the sources' ``PSUBSCRIBE``) does not use
this client: see `broadcaster.sources.redis.subscriber_endpoint`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from broadcaster.sources import url_scheme
from broadcaster.sources.redis import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEMES,
    parse_cluster_url,
    parse_sentinel_url,
)

MAX_CONNECTIONS = 64
POOL_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0


def topology(url: str) -> str:
    """``"sentinel"``, ``"cluster"`` or ``"redis"`` (one server: TCP, TLS or a unix socket)."""
    scheme = url_scheme(url)
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    return "redis"


def _retry(retries: int = 3) -> Retry:
    """A command that meets a dropped connection (Redis restarted, the master failed over)
    is tried again on a fresh one, briefly, instead of failing a join or a heartbeat."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries)


class BlockingSentinelConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool (master resolved on every connect, connections to a replaced
    master dropped) with the blocking pool's waiting for a free connection."""


class SentinelRedis(aioredis.Redis):
    """A master client that also closes the Sentinel connections it asked the master of."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            for client in manager.sentinels:
                await client.aclose()


def make_client(url: str, *, max_connections: int = MAX_CONNECTIONS,
                pool_timeout: float = POOL_TIMEOUT,
                connect_timeout: float = CONNECT_TIMEOUT, retries: int = 3) -> Any:
    """A redis-py asyncio client for ``url``; no connection is opened until the first command
    (``await client.ping()`` tells whether Redis answers). ``retries=0`` for a probe: "is
    Redis there?" wants one answer, not three attempts with backoff."""
    kind = topology(url)
    if kind == "sentinel":
        target = parse_sentinel_url(url)
        sentinel = target.sentinel(connect_timeout, socket_timeout=None)
        return sentinel.master_for(
            target.service, redis_class=SentinelRedis,
            connection_pool_class=BlockingSentinelConnectionPool,
            max_connections=max_connections, timeout=pool_timeout, db=target.db,
            username=target.username, password=target.password,
            socket_connect_timeout=connect_timeout, retry=_retry(retries))
    if kind == "cluster":
        # RedisCluster keeps a pool per node; its own retry covers MOVED and dead nodes.
        return parse_cluster_url(url).client(max_connections=max_connections,
                                             socket_connect_timeout=connect_timeout)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout,
        socket_connect_timeout=connect_timeout, retry=_retry(retries))
    return aioredis.Redis(connection_pool=pool)
