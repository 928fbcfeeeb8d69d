"""The interface every event source implements.

Small on purpose, after encode/broadcaster: connect, subscribe, read the next
batch, close. A batch is whatever arrived together (one socket read), so the
server can fan it out together and coalesce writes per client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..event import BroadcastEvent

ErrorCallback = Callable[[str, str], None]


class EventSource(ABC):
    #: Short label for logs and metrics, e.g. "redis" or "memory".
    kind: str = "source"

    def __init__(self, url: str) -> None:
        self.url = url
        # Called with (kind, reason) for every message that was dropped.
        self.on_bad_message: ErrorCallback = lambda kind, reason: None

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection; raises when the server cannot be reached."""

    @abstractmethod
    async def subscribe(self) -> None:
        """Start receiving; called after every (re)connect."""

    @abstractmethod
    async def next_batch(self) -> list[BroadcastEvent]:
        """Wait for events; raises ConnectionError (or the driver's) when the link is lost."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection; safe to call twice or after a failure."""

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if not parts.password:
            return self.url
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
