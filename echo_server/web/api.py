"""The HTTP API on port 6001, as laravel-echo-server's Express app answers it.

Same routes, key check, shapes and status codes; figures come from the state
layer (``ServerState``), so they stay right when several instances share Redis.
Unlike the reference, a malformed body is a 400, never a crash.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from broadcaster.event import BroadcastEvent
from echo_common.jsoncodec import dumps, loads
from echo_common.signing import same_secret

from ..apps.model import App
from ..apps.store import AppStore, AppsUnavailable
from ..apps.tags import SEPARATOR, in_app
from ..core.limits import event_name_problem
from ..core.state import ServerState, rss_bytes
from ..transport.http import Request, Response

log = logging.getLogger("echo_server.api")

_APP_ROUTE = re.compile(r"^/apps/([^/]+)/(events|status|channels)(?:/([^/]+))?(/users)?/?$")
EVENT_INCOMPLETE = "Event must include channel, event name and data"
USERS_PRESENCE_ONLY = "User list is only possible for Presence Channels"

# Hands a request's events out at once, as one batch; False when they cannot go (nothing went).
Publish = Callable[[list[BroadcastEvent]], bool]


def _json(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    return Response(status, dumps(body).encode("utf-8"), list(headers),
                    "application/json; charset=utf-8")


class HttpApi:
    def __init__(self, apps: AppStore, publish: Publish, state: ServerState, *,
                 http_publish: bool = True, cors: dict[str, Any] | None = None,
                 extra_headers: dict[str, str] | None = None) -> None:
        self.apps = apps
        self.publish = publish
        self.state = state
        self.http_publish = http_publish
        self.headers: list[tuple[str, str]] = [("X-Powered-By", "Express")]
        if cors and cors.get("allowCors"):
            self.headers += [
                ("Access-Control-Allow-Origin", str(cors.get("allowOrigin", ""))),
                ("Access-Control-Allow-Methods", str(cors.get("allowMethods", ""))),
                ("Access-Control-Allow-Headers", str(cors.get("allowHeaders", ""))),
            ]
        for name, value in (extra_headers or {}).items():
            self.headers.append((str(name), str(value)))
        self._ok = Response.prebuilt(200, dumps({"message": "ok"}).encode("utf-8"),
                                     list(self.headers), "application/json; charset=utf-8")

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path
        if path == "/" and request.method in ("GET", "HEAD"):
            return Response(200, b"OK", list(self.headers), "text/html; charset=utf-8")
        match = _APP_ROUTE.match(path)
        if match is None:
            return self.not_found(request)
        app_id, kind = match.group(1), match.group(2)
        if request.method == "OPTIONS":
            return Response(200, b"GET,HEAD", [*self.headers, ("Allow", "GET,HEAD")],
                            "text/html; charset=utf-8")
        name, users = match.group(3), match.group(4)
        if kind == "events":
            if request.method != "POST" or not self.http_publish or name or users:
                return self.not_found(request)
        elif request.method not in ("GET", "HEAD") or (kind == "status" and (name or users)):
            return self.not_found(request)
        found = self.apps.cached("id", app_id)
        if found is None:  # an id the store's memory lacks: its database answers
            return self._looked_up(app_id, request, kind, name, users)
        return self._dispatch(found, request, kind, name, users)

    async def _looked_up(self, app_id: str, request: Request, kind: str, name: str | None,
                         users: str | None) -> Response:
        try:
            app = await self.apps.by_id(app_id)
        except AppsUnavailable:
            return _json(503, {"error": "Apps cannot be looked up now: retry later"},
                         self.headers)
        answer = self._dispatch((app,) if app is not None else (), request, kind, name, users)
        return answer if isinstance(answer, Response) else await answer

    def _dispatch(self, apps: tuple[App, ...], request: Request, kind: str, name: str | None,
                  users: str | None) -> Response | Awaitable[Response]:
        app = self._authorized(apps, request)
        if app is None:
            return _json(403, {"error": "Unauthorized"}, self.headers)
        tag = app.tag  # an isolated app's own channels (apps/tags.py)
        if kind == "events":
            return self._post_event(request, tag)
        if kind == "status":
            return self._status(tag[1:])
        if name is None:
            return self._channels(request.query.get("filter_by_prefix", ""), tag)
        if SEPARATOR in name:
            return _json(400, {"error": "Invalid channel name"}, self.headers)
        if users:
            return self._users(name + tag)
        return self._channel(name + tag)

    async def _status(self, app_id: str) -> Response:
        """``app_id``: the isolated app's own id (its connections only), "" for the default
        app (the server's, as laravel-echo-server reports them)."""
        rss = rss_bytes()
        return _json(200, {
            "subscription_count": await self.state.app_connection_count(app_id),
            "uptime": self.state.uptime(),
            # Node's heap figures have no CPython counterpart: rss is the one that counts.
            "memory_usage": {"rss": rss, "heapTotal": 0, "heapUsed": 0, "external": 0,
                             "arrayBuffers": 0},
        }, self.headers)

    async def _channels(self, prefix: str, tag: str) -> Response:
        counts = in_app(await self.state.channel_counts(prefix), tag)
        return _json(200, {"channels": {
            name: {"subscription_count": count, "occupied": True}
            for name, count in counts.items() if count > 0}}, self.headers)

    async def _channel(self, name: str) -> Response:
        count = await self.state.channel_count(name)
        body: dict[str, Any] = {"subscription_count": count, "occupied": count > 0}
        if name.startswith("presence-"):
            body["user_count"] = len(await self.state.presence_members(name))
        return _json(200, body, self.headers)

    async def _users(self, name: str) -> Response:
        if not name.startswith("presence-"):
            return _json(400, {"error": USERS_PRESENCE_ONLY}, self.headers)
        members = await self.state.presence_members(name)
        return _json(200, {"users": [{"id": m.user_id, "user_info": m.user_info}
                                     for m in members]}, self.headers)

    def _authorized(self, apps: tuple[App, ...], request: Request) -> App | None:
        """The app of the path's id (the legacy ``clients`` may share one) whose unsigned
        key the request brings, if it is enabled."""
        header = request.headers.get("authorization")
        if header is not None:
            key = header[7:] if header[:7].lower() == "bearer " else None
        else:
            key = request.query.get("auth_key")
        if not key:
            return None
        for app in apps:
            expected = app.unsigned_key
            if expected is not None and app.enabled and same_secret(key, expected):
                return app
        return None

    def _post_event(self, request: Request, tag: str) -> Response:
        try:
            body = loads(request.body) if request.body.strip() else None
        except ValueError:
            return _json(400, {"error": "Request body must be JSON"}, self.headers)
        if not isinstance(body, dict):
            if body is None:
                return _json(400, {"error": "Request body must be a JSON object"}, self.headers)
            return _json(400, {"error": EVENT_INCOMPLETE}, self.headers)
        channels = body.get("channels") or ([body["channel"]] if body.get("channel") else [])
        name, data = body.get("name"), body.get("data")
        if isinstance(channels, str):
            channels = [channels]
        if (not channels or not isinstance(channels, list) or not name or not data
                or not isinstance(name, str) or not all(isinstance(c, str) and c
                                                        for c in channels)):
            return _json(400, {"error": EVENT_INCOMPLETE}, self.headers)
        if any(SEPARATOR in channel for channel in channels):  # no app names another's
            return _json(400, {"error": "Invalid channel name"}, self.headers)
        if event_name_problem(name):
            return _json(400, {"error": "Invalid event name"}, self.headers)
        if tag:
            channels = [channel + tag for channel in channels]
        if isinstance(data, str):
            with contextlib.suppress(ValueError):
                data = loads(data)
        socket_id = body.get("socket_id")
        socket = socket_id if isinstance(socket_id, str) and socket_id else None
        data_json = dumps(data)
        if not self.publish([BroadcastEvent(channel, name, data_json, socket)
                             for channel in channels]):
            return _json(503, {"error": "Event queue is full"}, self.headers)
        return self._ok

    def not_found(self, request: Request) -> Response:
        method = request.method
        body = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>Error</title>\n</head>\n<body>\n<pre>Cannot {method} "
                f"{_html_escape(request.path)}</pre>\n</body>\n</html>\n")
        return Response(404, body.encode("utf-8"), list(self.headers), "text/html; charset=utf-8")


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
