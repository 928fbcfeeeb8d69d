"""The two interfaces every backend implements: a source (what the server listens to) and a
publisher (what services call), both chosen by URL scheme.

Small on purpose, after encode/broadcaster: connect, subscribe, read the next
batch, close. A batch is whatever arrived together (one socket read), so the
server can fan it out together and coalesce writes per client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

    async def ack(self, batch: list[BroadcastEvent]) -> None:  # noqa: B027 - optional hook
        """Called once the hub has fanned ``batch`` out (also after an empty batch). Sources
        that can replay what was not confirmed (Redis Streams) acknowledge here, so a crash
        between reading and delivering loses nothing; the others need do nothing."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection; safe to call twice or after a failure."""

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs."""
        return display_url(self.url)


class Publisher(ABC):
    """Writes one event to the backend, in the form its source reads (for Redis: exactly
    what Laravel's RedisBroadcaster writes)."""

    #: What ``Broadcaster(url, **options)`` passes on. Every backend takes all of them, so one
    #: call works whatever the URL (``echo-server publish`` gives any URL the config's
    #: keyPrefix); each uses those that mean something to it (``key_prefix``: Redis only).
    OPTIONS = frozenset({"key_prefix", "connect_timeout"})

    def __init__(self, url: str, **options: Any) -> None:
        # A misspelt option must not pass silently: ``prefix=`` (the URL's spelling) was
        # taken and ignored, and every event went out unprefixed, to no Echo client.
        unknown = sorted(set(options) - self.OPTIONS)
        if unknown:
            raise TypeError(f"unknown publisher option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))} (the options are "
                            f"{', '.join(sorted(self.OPTIONS))})")
        self.url = url

    @abstractmethod
    async def publish(self, channels: Sequence[str], event: str,
                      data: Mapping[str, Any] | None, socket: str | None) -> None:
        """Raises the driver's error when the backend cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; safe to call twice."""


def display_url(url: str) -> str:
    """Passwords masked, in the user part and in query parameters (``sentinel_password``):
    URLs end up in logs, metrics labels and the status page. Works on netlocs that list
    several hosts (Sentinel), which ``urlsplit().port`` cannot parse."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostinfo}")
    if "password" in parts.query:
        query = [(k, "***" if "password" in k else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if not parts.netloc:
        # memory://, unix:///path: urlunsplit would drop the "//".
        text = f"{parts.scheme}://{parts.path}"
        return text + (f"?{parts.query}" if parts.query else "")
    return urlunsplit(parts)


def split_options(url: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Take our own query parameters (``prefix``, ``stream``, ``listen``...) out of a URL, so
    the driver's URL parser (redis-py, asyncpg) never sees a parameter it would reject or
    send to the server."""
    parts = urlsplit(url)
    wanted = set(names)
    ours: dict[str, str] = {}
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in wanted:
            ours[key] = value
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), ours


def option_float(options: Mapping[str, str], name: str, default: float) -> float:
    """A numeric URL option; a bad value is a configuration error, reported at start-up."""
    value = options.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"URL option {name}={value!r} is not a number") from None
    if number < 0:
        raise ValueError(f"URL option {name}={value!r} must not be negative")
    return number
