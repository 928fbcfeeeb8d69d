"""Fifty pages in one Node process (``tests/node/many_pages.mjs``): laravel-echo 2 and
socket.io-client 4 as a frontend ships them, where one process per page would cost more
than the server under test."""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, Self

from tests.support.http import http_client
from tests.support.node_client import NODE_DIR


class NodePages:
    def __init__(self, url: str, count: int, channel: str, event: str) -> None:
        self.args = [url, str(count), channel, event]
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        self.process = await asyncio.create_subprocess_exec(
            "node", str(NODE_DIR / "many_pages.mjs"), *self.args, cwd=str(NODE_DIR),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024)
        assert await self._line(30) == {"type": "ready"}
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.write(b"quit\n")
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _line(self, timeout: float) -> Any:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, "the pages' process ended"
        return json.loads(line)

    async def report(self) -> list[dict[str, Any]]:
        """Per page: ``received`` (each event's ``n``), ``connects``, ``recovered``, ``ids``."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"report\n")
        return list((await self._line(10))["pages"])

    async def got(self, n: int, timeout: float = 20.0) -> None:
        """Until every page has received the event numbered ``n`` (a ``Ticker``'s)."""
        await self.until(lambda report: all(page["received"] and page["received"][-1] >= n
                                             for page in report),
                         f"every page got event {n}", timeout)

    async def until(self, predicate: Any, what: str, timeout: float = 20.0) -> None:
        """Until ``predicate(report)`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(await self.report()):
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting until {what}")
            await asyncio.sleep(0.05)


class Ticker:
    """Publishes ``{"n": 0}``, ``{"n": 1}``... on ``channel`` every ``interval`` seconds
    through ``url`` until the ``async with`` ends; ``sent`` says how many went out."""

    def __init__(self, url: str, channel: str, event: str, interval: float) -> None:
        self.url, self.channel, self.event, self.interval = url, channel, event, interval
        self.sent = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        from broadcaster import Broadcaster

        async with Broadcaster(self.url) as publisher:
            while not self._stop.is_set():
                await publisher.publish(self.channel, self.event, {"n": self.sent})
                self.sent += 1
                await asyncio.sleep(self.interval)


async def subscribed_on(port: int, channel: str, count: int, *, app: str, key: str,
                        timeout: float = 20.0) -> None:
    """Until ``count`` sockets are in ``channel``, as the HTTP API of the server on ``port``
    says (Echo's subscribe has no answer)."""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with http_client() as http:
        while True:
            async with http.get(f"http://127.0.0.1:{port}/apps/{app}/channels/{channel}",
                                params={"auth_key": key}) as response:
                if (await response.json())["subscription_count"] >= count:
                    return
            if loop.time() > deadline:
                raise AssertionError(f"{count} sockets never subscribed to {channel}")
            await asyncio.sleep(0.05)
