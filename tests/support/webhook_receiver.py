"""A Laravel-like webhook endpoint on loopback: it records each POST (headers and raw body)
and answers as the test says: taking them (200), failing (500), or not listening at all
(connection refused), to show retries. Like a Laravel route under the ``web`` middleware it
sets a session cookie on every answer, and it is reached by a host name, where a client
that kept cookies would send it back."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["events"])

    def signed_with(self, secret: str) -> bool:
        """What pusher-php-server's ``webhook()`` checks."""
        expected = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("X-Pusher-Signature", ""))


class WebhookReceiver:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.status = 200
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/echo/webhooks"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/echo/webhooks", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        """Stop listening: the sender gets connection refused."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        delivery = Delivery(dict(request.headers), await request.read(), self.status)
        async with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()
        response = web.Response(status=self.status)
        response.set_cookie("laravel_session", f"webhook-{len(self.deliveries)}")
        return response

    def taken(self) -> list[Delivery]:
        """What a receiver that drops repeats by X-Webhook-Id kept, in order."""
        seen: set[str] = set()
        kept = []
        for delivery in self.deliveries:
            ident = delivery.headers.get("X-Webhook-Id", "")
            if delivery.status == 200 and ident not in seen:
                seen.add(ident)
                kept.append(delivery)
        return kept

    def events(self) -> list[dict[str, Any]]:
        return [event for delivery in self.taken() for event in delivery.events]

    async def wait_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async def enough() -> None:
            async with self._changed:
                while len(self.events()) < count:
                    await self._changed.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.events()
