"""Laravel's Redis broadcasts: ``PSUBSCRIBE <keyPrefix>*``, one prefix stripped.

This is exactly what laravel-echo-server does, so the same ``keyPrefix``
setting means the same thing. The classic gotcha (Laravel prefixes channels
with ``<app>_database_`` and the echo server was given no ``keyPrefix``) is
detected and explained once in the log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..event import BadMessage, BroadcastEvent, parse_laravel_message
from ..jsoncodec import dumps
from .base import EventSource
from .redis_wire import RedisSubscriber

log = logging.getLogger("broadcaster.redis")

# Laravel's default prefix: Str::slug(APP_NAME, '_').'_database_' (Laravel 13: '-database-').
_LARAVEL_PREFIX = re.compile(r"^([a-z0-9_]+_database_|[a-z0-9-]+-database-)(.+)$")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
MAX_BATCH = 1000
# Channels of echo-server's own traffic between instances; never routed to clients.
INTERNAL_PREFIX = b"echo-server#"


class RedisPubSubSource(EventSource):
    kind = "redis"

    def __init__(self, url: str, key_prefix: str = "", **options: Any) -> None:
        super().__init__(url)
        self.key_prefix = key_prefix
        self.options = options
        self._subscriber: RedisSubscriber | None = None
        self._hinted = False

    @property
    def pattern(self) -> str:
        # Unlike the reference, glob characters in the prefix are escaped.
        return _GLOB_SPECIAL.sub(r"\\\1", self.key_prefix) + "*"

    async def connect(self) -> None:
        await self.close()
        self._subscriber = RedisSubscriber(self.url, self.options.get("connect_timeout", 5.0))
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
