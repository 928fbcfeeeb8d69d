"""Backends chosen by URL; a driver is imported only when its scheme is used.

Each scheme's module holds both directions (the source the server listens with and the
publisher services write with), so the wire format of a backend lives in one place.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import EventSource, Publisher

_REDIS = "broadcaster.sources.redis"
_STREAM = "broadcaster.sources.redis_stream"
_POSTGRES = "broadcaster.sources.postgres"
_MEMORY = "broadcaster.sources.memory"

# scheme: (module, source class, publisher class)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "redis": (_REDIS, "RedisPubSubSource", "RedisPublisher"),
    "rediss": (_REDIS, "RedisPubSubSource", "RedisPublisher"),
    "unix": (_REDIS, "RedisPubSubSource", "RedisPublisher"),
    "redis+sentinel": (_REDIS, "RedisSentinelSource", "RedisPublisher"),
    "redis+cluster": (_REDIS, "RedisClusterSource", "RedisPublisher"),
    "rediss+cluster": (_REDIS, "RedisClusterSource", "RedisPublisher"),
    "redis-stream": (_STREAM, "RedisStreamSource", "RedisStreamPublisher"),
    "rediss-stream": (_STREAM, "RedisStreamSource", "RedisStreamPublisher"),
    "postgres": (_POSTGRES, "PostgresSource", "PostgresPublisher"),
    "postgresql": (_POSTGRES, "PostgresSource", "PostgresPublisher"),
    "memory": (_MEMORY, "MemorySource", "MemoryPublisher"),
}


def url_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def _scheme(url: str) -> str:
    scheme = url_scheme(url)
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported event source {url!r}: use one of "
                         + ", ".join(f"{s}://" for s in SCHEMES))
    return scheme


def check_url(url: str) -> str:
    """The scheme, or ValueError saying what is wrong (an unknown scheme, a bad option, a
    driver that is not installed), so a bad source fails at start-up, not in the retry loop.
    Building a source opens no connection."""
    scheme = _scheme(url)
    try:
        source_from_url(url, instance_id="check")
    except (ValueError, TypeError) as exc:
        from .base import display_url

        raise ValueError(f"event source {display_url(url)}: {exc}") from None
    return scheme


def _load(url: str, which: int) -> Any:
    module_name, *classes = SCHEMES[_scheme(url)]
    return getattr(importlib.import_module(module_name), classes[which])


def source_from_url(url: str, **options: Any) -> EventSource:
    return _load(url, 0)(url, **options)


def publisher_from_url(url: str, **options: Any) -> Publisher:
    return _load(url, 1)(url, **options)


__all__ = ["SCHEMES", "EventSource", "Publisher", "check_url", "publisher_from_url",
           "source_from_url", "url_scheme"]
