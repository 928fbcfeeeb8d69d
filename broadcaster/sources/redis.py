"""Laravel's Redis broadcasts: ``PSUBSCRIBE <keyPrefix>*``, one prefix stripped; and the
publisher that writes exactly what Laravel's RedisBroadcaster writes.

This is exactly what laravel-echo-server does, so the same ``keyPrefix``
setting means the same thing. The classic gotcha (Laravel prefixes channels
with ``<app>_database_`` and the echo server was given no ``keyPrefix``) is
detected and explained once in the log.

URLs: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=0``
and ``redis+sentinel://[user:password@]host:port[,host2:port2]/service_name[/db]``
(``?sentinel_password=`` when the Sentinels want one). ``?prefix=`` sets the channel prefix
in the URL (it wins over ``databaseConfig.redis.keyPrefix``), the same way for the source and
the publisher.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..event import BadMessage, BroadcastEvent, encode_laravel_message, parse_laravel_message
from ..jsoncodec import dumps
from .base import EventSource, Publisher, option_float, split_options
from .redis_wire import RedisSubscriber

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
        self._subscriber: RedisSubscriber | None = None
        self._hinted = False

    @property
    def pattern(self) -> str:
        # Unlike the reference, glob characters in the prefix are escaped.
        return _GLOB_SPECIAL.sub(r"\\\1", self.key_prefix) + "*"

    async def server_url(self) -> str:
        """The Redis to subscribe to; Sentinel asks its Sentinels, on every (re)connect."""
        return self._url

    async def connect(self) -> None:
        await self.close()
        self._subscriber = RedisSubscriber(await self.server_url(), self.connect_timeout)
        await self._subscriber.connect()

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

@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def sentinel(self, timeout: float) -> Any:
        from redis.asyncio.sentinel import Sentinel

        sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout,
                                           "socket_connect_timeout": timeout}
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        return Sentinel(self.sentinels, sentinel_kwargs=sentinel_kwargs,
                        socket_timeout=timeout, socket_connect_timeout=timeout)

    def master_url(self, host: str, port: int) -> str:
        auth = ""
        if self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        if ":" in host:
            host = f"[{host}]"
        return f"redis://{auth}{host}:{port}/{self.db}"


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[user:password@]host:port[,host2:port2]/service_name[/db]``; the
    password is the master's (``?sentinel_password=`` for the Sentinels themselves)."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":") or "26379"
        else:
            host, _, port = item.partition(":")
            port = port or "26379"
        sentinels.append((host, int(port)))
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


class RedisSentinelSource(RedisPubSubSource):
    """The same subscriber, pointed at whatever master the Sentinels name right now: asked
    again on every reconnect, so a failover is one short outage, not a dead source."""

    kind = "redis"

    def __init__(self, url: str, key_prefix: str = "", **options: Any) -> None:
        super().__init__(url, key_prefix, **options)
        self.target = parse_sentinel_url(url)
        self.master: tuple[str, int] | None = None

    async def server_url(self) -> str:
        sentinel = self.target.sentinel(self.connect_timeout)
        try:
            host, port = await sentinel.discover_master(self.target.service)
        finally:
            for client in sentinel.sentinels:
                await client.aclose()
        if self.master is not None and self.master != (host, port):
            log.warning("Sentinel service %r moved from %s:%s to %s:%s", self.target.service,
                        *self.master, host, port)
        self.master = (host, port)
        return self.target.master_url(host, port)


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
        super().__init__(url)
        self._url, url_options = split_options(url, OPTIONS)
        self.prefix = url_options.get("prefix", key_prefix)
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self._client: Any = None
        self._sentinel: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            if self._url.lower().startswith("redis+sentinel://"):
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
