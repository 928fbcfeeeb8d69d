"""A real HTTP auth backend that answers ``/broadcasting/auth`` the way
Laravel's RedisBroadcaster does, and records what it was sent.

Rules map a channel name to an answer: ``True`` (private: JSON ``true``),
a dict (presence: ``{"channel_data": ...}``), an int (that HTTP status, e.g.
403), or a callable taking the request record and returning one of those, or an
awaitable of one (a backend that is slow for some channels only).
Channels without a rule are refused with 403, as Laravel does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Answer = bool | int | dict[str, Any] | str | Callable[["AuthCall"], Any]


@dataclass
class AuthCall:
    channel: str
    form: dict[str, str]
    headers: dict[str, str]
    # Every header line as sent, in order (``headers`` hides duplicates).
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class AuthBackend:
    rules: dict[str, Answer] = field(default_factory=dict)
    calls: list[AuthCall] = field(default_factory=list)
    url: str = ""
    gate: asyncio.Event | None = None  # when set, answers wait for it
    _runner: web.AppRunner | None = None
    _called: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/broadcasting/auth", self._auth)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # A host name, as deployments have: aiohttp's default cookie jar skipped IP hosts,
        # so on 127.0.0.1 a client that kept cookies looked like one that did not.
        self.url = f"http://localhost:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def allow_private(self, channel: str) -> None:
        self.rules[channel] = True

    def presence(self, channel: str, user_id: Any, user_info: Any,
                 as_string: bool = False) -> None:
        data = {"user_id": user_id, "user_info": user_info}
        self.rules[channel] = {"channel_data": json.dumps(data) if as_string else data}

    async def wait_calls(self, count: int, timeout: float = 5.0) -> list[AuthCall]:
        async def enough() -> None:
            while len(self.calls) < count:
                self._called.clear()
                await self._called.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.calls

    async def _auth(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        # Laravel's ``web`` middleware starts a session on every request and says so.
        response.set_cookie("laravel_session", f"issued-{len(self.calls)}", httponly=True)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        channel = form.get("channel_name", "")
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        call = AuthCall(channel, form, dict(request.headers), raw)
        self.calls.append(call)
        self._called.set()
        if self.gate is not None:
            await self.gate.wait()
        answer = self.rules.get(channel, 403)
        if callable(answer):
            answer = answer(call)
            if inspect.isawaitable(answer):
                answer = await answer
        if answer is True:
            return web.json_response(True)
        if isinstance(answer, int) and not isinstance(answer, bool):
            if answer in (301, 302):
                raise web.HTTPFound("/login")
            return web.json_response({"message": "Unauthorized."}, status=answer)
        if isinstance(answer, str):
            return web.Response(text=answer, content_type="text/html")
        return web.json_response(answer)
