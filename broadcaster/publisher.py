"""What services call to broadcast: ``Broadcaster(url).publish(channels, event, data)``.

The URL picks the backend exactly as it picks the server's source, so a service and the echo
server configured with the same URL meet: ``redis://...?prefix=laravel_database_`` publishes
the bytes Laravel's RedisBroadcaster would (prefix included, ``socket`` in ``data`` too),
``redis-stream://`` appends to the stream, ``postgres://`` NOTIFYs, ``memory://`` reaches the
servers embedded in this process. ``SyncBroadcaster`` is the same for code that is not async
(a Django view, a Celery task, a script).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from .events import LaravelEvent
from .sources import publisher_from_url
from .sources.base import Publisher, display_url

T = TypeVar("T")


def _channel_list(channels: str | Iterable[str]) -> list[str]:
    names = [channels] if isinstance(channels, str) else list(channels)
    if not names:
        raise ValueError("no channel to publish to")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel names must be non-empty strings, not {name!r}")
    return names


class Broadcaster:
    """One backend connection, opened on first use; share one per process.

    ``options`` go to the backend: ``key_prefix`` for Redis (what ``?prefix=`` in the URL
    also sets; other backends take and ignore it), ``connect_timeout`` for all. Any other
    name is a TypeError rather than a setting that silently does nothing."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self._backend: Publisher = publisher_from_url(url, **options)

    def __repr__(self) -> str:
        return f"Broadcaster({display_url(self.url)!r})"

    async def publish(self, channels: str | Iterable[str], event: str,
                      data: Mapping[str, Any] | None = None, *,
                      socket: str | None = None) -> None:
        """Broadcast ``event`` with ``data`` (Laravel's ``broadcastWith()`` array) on
        ``channels`` (Echo's names: ``private-`` / ``presence-`` included); ``socket`` is the
        sender's ``X-Socket-ID``, whom the server leaves out (``toOthers()``)."""
        if not isinstance(event, str) or not event:
            raise ValueError("the event name must be a non-empty string")
        await self._backend.publish(_channel_list(channels), event, data, socket)

    async def broadcast(self, event: LaravelEvent, *, socket: str | None = None) -> None:
        """``broadcast(new SomeEvent(...))``: an event built by the helpers in
        ``broadcaster.events``."""
        await self.publish(event.channels, event.name, event.payload, socket=socket)

    async def close(self) -> None:
        await self._backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class SyncBroadcaster:
    """``Broadcaster`` for synchronous code: its own event loop on a daemon thread, so it
    works the same from a plain script, a worker thread, or code that a running event loop
    calls synchronously. Every call blocks until the backend has the event (or raises)."""

    def __init__(self, url: str, *, timeout: float = 10.0, **options: Any) -> None:
        self.timeout = timeout
        self._broadcaster = Broadcaster(url, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="SyncBroadcaster", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def url(self) -> str:
        return self._broadcaster.url

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("SyncBroadcaster is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    def publish(self, channels: str | Iterable[str], event: str,
                data: Mapping[str, Any] | None = None, *, socket: str | None = None) -> None:
        self._run(self._broadcaster.publish(channels, event, data, socket=socket))

    def broadcast(self, event: LaravelEvent, *, socket: str | None = None) -> None:
        self._run(self._broadcaster.broadcast(event, socket=socket))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._broadcaster.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["Broadcaster", "SyncBroadcaster"]
