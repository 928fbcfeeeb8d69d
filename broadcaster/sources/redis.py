"""Laravel's Redis broadcasts: ``PSUBSCRIBE <keyPrefix>*``, one prefix stripped.

This is exactly what laravel-echo-server does, so the same ``keyPrefix``
setting means the same thing. The classic gotcha (Laravel prefixes channels
with ``<app>_database_`` and the echo server was given no ``keyPrefix``) is
detected and explained once in the log.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

from ..event import BadMessage, BroadcastEvent, parse_laravel_message
from ..jsoncodec import dumps
from .base import EventSource

log = logging.getLogger("broadcaster.redis")

# Laravel's default prefix: Str::slug(APP_NAME, '_').'_database_' (Laravel 13: '-database-').
_LARAVEL_PREFIX = re.compile(r"^([a-z0-9_]+_database_|[a-z0-9-]+-database-)(.+)$")
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")
MAX_BATCH = 1000


class RedisPubSubSource(EventSource):
    kind = "redis"

    def __init__(self, url: str, key_prefix: str = "", **options: Any) -> None:
        super().__init__(url)
        self.key_prefix = key_prefix
        self.options = options
        self._client: Any = None
        self._pubsub: Any = None
        self._hinted = False

    @property
    def pattern(self) -> str:
        # Unlike the reference, glob characters in the prefix are escaped.
        return _GLOB_SPECIAL.sub(r"\\\1", self.key_prefix) + "*"

    async def connect(self) -> None:
        import redis.asyncio as aioredis

        await self.close()
        self._client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=self.options.get("connect_timeout", 5.0),
            health_check_interval=0, **self.options.get("redis_kwargs", {}))
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._client.ping()

    async def subscribe(self) -> None:
        await self._pubsub.psubscribe(self.pattern)

    async def next_batch(self) -> list[BroadcastEvent]:
        pubsub = self._pubsub
        if pubsub is None:
            raise ConnectionError("not connected")
        batch: list[BroadcastEvent] = []
        message = await pubsub.get_message(timeout=None)
        while message is not None:
            event = self._decode(message)
            if event is not None:
                batch.append(event)
            if len(batch) >= MAX_BATCH:
                break
            message = await pubsub.get_message(timeout=0.0)
        return batch

    def _decode(self, message: dict[str, Any]) -> BroadcastEvent | None:
        if message.get("type") != "pmessage":
            return None
        raw_channel = message["channel"]
        try:
            channel = raw_channel.decode("utf-8") if isinstance(raw_channel, bytes) else raw_channel
        except UnicodeDecodeError:
            self.on_bad_message("bad_message", "channel name is not UTF-8")
            return None
        channel = channel[len(self.key_prefix):]
        if not self.key_prefix and not self._hinted:
            self._hint_prefix(channel)
        try:
            return parse_laravel_message(channel, message["data"])
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
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        # Closing a dead link must not fail.
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
