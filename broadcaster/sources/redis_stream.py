"""Redis Streams: events that survive a restart of the echo server.

Pub/Sub forgets a message nobody was subscribed to; a stream keeps it. Every echo-server
instance reads the stream through a consumer group of its own (``echo-<instanceId>``), so every
instance fans every entry out to its own clients, and acknowledges an entry (XACK) only after
the hub has written it to them. A restarted instance resumes after its last acknowledged entry:
first its own pending entries (read before the stop, never confirmed), then the rest.

On start, an instance with a backlog waits ``warmup`` seconds (default 5: the time Echo clients
take to reconnect and resubscribe) before reading it, so the clients that come back receive
what was published while the server was down.

URL: ``redis-stream://[user:password@]host:port/db?stream=echo_events`` (``rediss-stream://``
for TLS) with ``warmup`` (seconds), ``block`` (seconds one XREADGROUP waits), ``count`` (entries
per read) for the source and ``maxlen`` (``XADD ... MAXLEN ~ maxlen``; 0 keeps everything) for
the publisher. Keep ``maxlen`` above what is published during the longest outage you want to
ride out: trimmed entries cannot be replayed.

Entry fields: ``channels`` (a JSON list of Echo channel names), ``event``, ``data`` (the JSON
Laravel would publish as ``data``, ``socket`` included) and ``socket`` (absent when none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from echo_common.jsoncodec import loads

from ..event import BadMessage, BroadcastEvent, laravel_data, parse_routed_message
from ..phpjson import php_json_encode
from .base import EventSource, Publisher, option_float, split_options

log = logging.getLogger("broadcaster.redis_stream")

DEFAULT_STREAM = "echo_events"
DEFAULT_MAXLEN = 100_000
OPTIONS = ("stream", "warmup", "block", "count", "maxlen", "connect_timeout")


def redis_url(url: str) -> str:
    """``redis-stream://`` -> ``redis://`` (``rediss-stream://`` -> ``rediss://``)."""
    scheme, _, rest = url.partition("://")
    return scheme.lower().removesuffix("-stream") + "://" + rest


def _client(url: str, connect_timeout: float, read_timeout: float | None = None, *,
            retries: bool = True) -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from .redis import publisher_options

    options = publisher_options(connect_timeout)
    options["socket_timeout"] = read_timeout
    if not retries:
        options["retry"] = Retry(NoBackoff(), 0)
    return aioredis.Redis.from_url(url, **options)


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def parse_entry(fields: Mapping[bytes, bytes]) -> list[BroadcastEvent]:
    try:
        channels = loads(fields.get(b"channels") or b"null")
        data = loads(fields.get(b"data") or b"null")
        event = _text(fields.get(b"event"))
        socket = _text(fields.get(b"socket"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage("bad_json", f"not JSON: {exc}") from None
    return parse_routed_message({"channels": channels, "event": event, "data": data,
                                 "socket": socket})


async def read_entries(client: Any, stream: str, start: str, count: int
                       ) -> list[tuple[str, list[BroadcastEvent]]]:
    """Up to ``count`` entries of ``stream`` from id ``start`` on (inclusive), each with its
    events as the source gives them (numbered alike): what a client missed, read again for a
    recovery on an instance that did not send it. An entry that does not parse has no
    events (it was counted when the source first read it)."""
    entries = []
    for entry_id, fields in await client.xrange(stream, min=start, max="+", count=count):
        text = _text(entry_id)
        try:
            events = parse_entry(fields)
        except BadMessage:
            events = []
        number_events(events, text)
        entries.append((text, events))
    return entries


def number_events(events: list[BroadcastEvent], entry_id: str) -> None:
    """The entry's id on its first event, ``<id>~k`` on the k-th after it: one place per
    packet, the same on every instance, for recovery on another instance."""
    for k, event in enumerate(events):
        event.id = f"{entry_id}~{k}" if k else entry_id


class RedisStreamSource(EventSource):
    kind = "redis-stream"

    def __init__(self, url: str, instance_id: str = "", **options: Any) -> None:
        super().__init__(url)
        plain, url_options = split_options(url, OPTIONS)
        if not instance_id:
            raise ValueError("a redis-stream source needs the instance id (instanceId / "
                             "ECHO_INSTANCE_ID): its consumer group is named after it")
        self._url = redis_url(plain)
        self.stream = url_options.get("stream") or DEFAULT_STREAM
        self.warmup = option_float(url_options, "warmup", 5.0)
        self.block = option_float(url_options, "block", 2.0)
        self.count = max(1, int(option_float(url_options, "count", 1000)))
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self.group = f"echo-{instance_id}"
        self.consumer = instance_id
        self._client: Any = None
        self._started = False
        self._warmup_until: float | None = None
        self._history = True  # our own pending entries come first, from cursor "0"
        self._cursor: bytes | str = b"0"
        self._last_id: bytes | None = None  # where to re-create a group Redis lost
        self._unacked: list[bytes] = []

    async def connect(self) -> None:
        await self.close()
        # No retries inside redis-py: the source runner owns reconnecting (backoff, health,
        # one log line per outage).
        self._client = _client(self._url, self.connect_timeout,
                               self.block + self.connect_timeout, retries=False)
        await self._client.ping()

    def _require(self) -> Any:
        if self._client is None:
            raise ConnectionError("not connected")
        return self._client

    async def subscribe(self) -> None:
        from redis.exceptions import ResponseError

        client = self._require()
        try:
            # A new instance starts at the end; a group Redis lost (restart without
            # persistence) is re-created after the last entry this process delivered.
            await client.xgroup_create(self.stream, self.group, id=self._last_id or "$",
                                       mkstream=True)
            created = True
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            created = False
        if self._unacked:
            # Delivered before the link went down, not yet confirmed: confirm, don't replay.
            await client.xack(self.stream, self.group, *self._unacked)
            self._unacked = []
        self._history, self._cursor = True, b"0"
        if not self._started:
            self._started = True
            if not created and self.warmup > 0 and await self._has_backlog(client):
                self._warmup_until = asyncio.get_running_loop().time() + self.warmup
                log.info("stream %r has entries published while this instance (group %r) was "
                         "down; reading them in %.1f s, once Echo clients have reconnected",
                         self.stream, self.group, self.warmup)

    async def _has_backlog(self, client: Any) -> bool:
        groups = await client.xinfo_groups(self.stream)
        ours = next((g for g in groups if _text(g.get("name")) == self.group), None)
        if ours is None:
            return False
        if int(ours.get("pending") or 0) > 0:
            return True
        info = await client.xinfo_stream(self.stream)
        return _id(info["last-generated-id"]) > _id(ours["last-delivered-id"])

    async def next_batch(self) -> list[BroadcastEvent]:
        if self._warmup_until is not None:
            delay = self._warmup_until - asyncio.get_running_loop().time()
            self._warmup_until = None
            if delay > 0:
                await asyncio.sleep(delay)
        client = self._require()
        while True:
            if self._history:
                reply = await client.xreadgroup(self.group, self.consumer,
                                                {self.stream: self._cursor}, count=self.count)
            else:
                reply = await client.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                count=self.count,
                                                block=max(1, int(self.block * 1000)))
            entries = reply[0][1] if reply else []
            if entries:
                if self._history:
                    self._cursor = entries[-1][0]
                return self._decode(entries)
            self._history = False

    def _decode(self, entries: list[tuple[bytes, Any]]) -> list[BroadcastEvent]:
        events: list[BroadcastEvent] = []
        ids: list[bytes] = []
        for entry_id, fields in entries:
            if entry_id is None:
                continue
            ids.append(entry_id)
            if fields is None:
                self.on_bad_message("stream_trimmed", f"stream {self.stream!r}: pending entry "
                                    f"{_text(entry_id)} was trimmed before it was delivered")
                continue
            try:
                parsed = parse_entry(fields)
            except BadMessage as exc:
                self.on_bad_message(exc.kind, f"stream {self.stream!r} entry "
                                    f"{_text(entry_id)}: {exc}")
                continue
            number_events(parsed, _text(entry_id))
            events.extend(parsed)
        if ids and (self._last_id is None or _id(ids[-1]) > _id(self._last_id)):
            self._last_id = ids[-1]
        self._unacked = ids
        return events

    async def ack(self, batch: list[BroadcastEvent]) -> None:
        ids = self._unacked
        if ids:
            await self._require().xack(self.stream, self.group, *ids)
            self._unacked = []

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class RedisStreamPublisher(Publisher):
    """``XADD <stream> MAXLEN ~ <maxlen> * channels [...] event <name> data {...} [socket id]``:
    one entry per event, whatever the number of channels."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        plain, url_options = split_options(url, OPTIONS)
        self._url = redis_url(plain)
        self.stream = url_options.get("stream") or DEFAULT_STREAM
        self.maxlen = int(option_float(url_options, "maxlen", DEFAULT_MAXLEN))
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self._client: Any = None

    async def publish(self, channels: Sequence[str], event: str,
                      data: Mapping[str, Any] | None, socket: str | None) -> None:
        fields: dict[str, str] = {
            "channels": php_json_encode(list(channels)),
            "event": event,
            "data": php_json_encode(laravel_data(data, socket)),
        }
        if socket:
            fields["socket"] = socket
        if self._client is None:
            self._client = _client(self._url, self.connect_timeout)
        await self._client.xadd(self.stream, fields,
                                maxlen=self.maxlen or None, approximate=True)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
