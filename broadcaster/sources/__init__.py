"""Event sources chosen by URL; drivers are imported only when their scheme is used."""

from __future__ import annotations

from typing import Any

from .base import EventSource

_SCHEMES = {
    "redis": ("broadcaster.sources.redis", "RedisPubSubSource"),
    "rediss": ("broadcaster.sources.redis", "RedisPubSubSource"),
    "unix": ("broadcaster.sources.redis", "RedisPubSubSource"),
    "memory": ("broadcaster.sources.memory", "MemorySource"),
}


def source_from_url(url: str, **options: Any) -> EventSource:
    import importlib

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported event source {url!r}: use one of "
                         + ", ".join(f"{s}://" for s in _SCHEMES))
    module_name, class_name = _SCHEMES[scheme]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(url, **options)  # type: ignore[no-any-return]


__all__ = ["EventSource", "source_from_url"]
