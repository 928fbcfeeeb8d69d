"""A lean Redis subscriber: hiredis's parser on a plain ``asyncio.Protocol``.

redis-py's asyncio PubSub costs several microseconds per message (a coroutine
round trip and a dict per ``get_message``); this reads every reply of one
socket read at once, which is also what lets the server fan a burst out as one
batch. Connection details (password, user, TLS, unix sockets) come from
redis-py's URL parser, so URLs mean exactly what they mean elsewhere.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis

# Stop reading from Redis beyond this many unconsumed replies (backpressure).
MAX_BUFFERED = 20_000
# hiredis moves its unread buffer to the front after each reply it takes, so one
# 256 KB read fed at once costs a memmove of up to 256 KB per reply (1.1 µs per
# 600-byte message instead of 0.3): feed it in pieces of this size.
FEED_STEP = 16 * 1024


class RedisReplyError(ConnectionError):
    pass


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.replies: list[Any] = []
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        replies = self.replies
        feed = self.reader.feed
        gets = self.reader.gets
        size = len(data)
        for offset in range(0, size, FEED_STEP):
            feed(data, offset, min(FEED_STEP, size - offset))
            reply = gets()
            while reply is not False:
                replies.append(reply)
                reply = gets()
        if len(replies) > MAX_BUFFERED and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        if replies:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("Redis closed the connection")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until a whole reply is there (a large one spans many reads) or the link is gone."""
        while not self.replies and self.lost is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def take(self, limit: int) -> list[Any]:
        replies = self.replies
        if len(replies) <= limit:
            self.replies = []
            taken = replies
        else:
            taken, self.replies = replies[:limit], replies[limit:]
        if self.paused and len(self.replies) < MAX_BUFFERED // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return taken


def _command(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8") if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisSubscriber:
    """One connection in subscribe mode."""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        from redis.connection import parse_url

        self.url = url
        self.params = parse_url(url)
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        params = self.params
        connection_class = getattr(params.get("connection_class"), "__name__", "")
        if "path" in params:
            coro = loop.create_unix_connection(_Protocol, params["path"])
        else:
            context = ssl.create_default_context() if connection_class == "SSLConnection" \
                else None
            coro = loop.create_connection(_Protocol, params.get("host", "localhost"),
                                          int(params.get("port", 6379)), ssl=context)
        _, protocol = await asyncio.wait_for(coro, self.connect_timeout)
        self._protocol = protocol
        password = params.get("password")
        if password:
            username = params.get("username")
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            await self._call(*auth)

    async def _call(self, *args: str) -> Any:
        return (await self.pipeline([args]))[0]

    async def pipeline(self, commands: Sequence[tuple[str | bytes, ...]]) -> list[Any]:
        """Commands in one write, their replies in order; the first refusal raises. On a
        connection that is not subscribed, this is also a lean publisher (the cluster relay):
        no task, no pool, one read for the lot."""
        protocol = self._require()
        assert protocol.transport is not None
        protocol.transport.write(b"".join([_command(*args) for args in commands]))
        replies: list[Any] = []
        async with asyncio.timeout(self.connect_timeout):
            while len(replies) < len(commands):
                await protocol.wait()
                if protocol.lost is not None and not protocol.replies:
                    raise ConnectionError(str(protocol.lost))
                replies += protocol.take(len(commands) - len(replies))
        for args, reply in zip(commands, replies, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                name = args[0] if isinstance(args[0], str) else args[0].decode()
                raise RedisReplyError(f"Redis refused {name}: {reply}")
        return replies

    async def command(self, *args: str) -> Any:
        """One ordinary command before subscribing (a Cluster source asks for the nodes)."""
        return await self._call(*args)

    def _require(self) -> _Protocol:
        if self._protocol is None:
            raise ConnectionError("not connected")
        return self._protocol

    async def psubscribe(self, pattern: str) -> None:
        reply = await self._call("PSUBSCRIBE", pattern)
        if not (isinstance(reply, list) and reply and reply[0] == b"psubscribe"):
            raise RedisReplyError(f"unexpected reply to PSUBSCRIBE: {reply!r}")

    async def subscribe(self, *channels: str) -> None:
        """In one write: Redis takes the commands of one read together, so no message of
        the first channel can come between the confirmations (subscribed one by one, a
        message published meanwhile arrived where the next confirmation was awaited)."""
        for reply in await self.pipeline([("SUBSCRIBE", channel) for channel in channels]):
            if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                raise RedisReplyError(f"unexpected reply to SUBSCRIBE: {reply!r}")

    async def read(self, limit: int) -> list[Any]:
        """The replies available now (at least one), or raise when the link is gone."""
        protocol = self._require()
        await protocol.wait()
        if protocol.replies:
            return protocol.take(limit)
        raise ConnectionError(str(protocol.lost))

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
