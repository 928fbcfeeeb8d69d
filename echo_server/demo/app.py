"""`echo-server demo`: the seed plan's lead-management page, live, with nothing else installed.

Two parts in one process and one event loop:

- the echo server itself (embedded defaults, in-memory presence, JWT handshake auth with a
  secret made up for the run, ``authHost`` pointing at the backend below), which also serves
  the built page at ``/demo`` (``web.demo_files``; built from ``clients/js`` by the set-up
  script, never committed);
- :class:`DemoBackend`, an aiohttp app playing the Laravel app: a login by ``?admin=<id>``
  (no passwords: it is a demo) that hands out a short-lived JWT, ``/broadcasting/auth``
  (private ``admin-dashboard.{id}`` for that admin only, ``presence-leads-management`` for
  every admin; signed with the app's secret, as Laravel's ``reverb`` driver answers, so one
  answer serves the page on either client stack: pusher-js sends the signature on, and
  echo-server, asking for a socket.io page, takes any 200 and the ``channel_data``), the
  leads, and an assignment endpoint that broadcasts ``lead.assigned`` and
  ``admin.capacity.updated`` exactly as the PHP events would, through ``broadcaster``, leaving
  out the acting tab (its ``X-Socket-ID``, Laravel's ``toOthers()``), and
  ``/broadcasting/user-auth``, the user authentication a pusher-js page signs in with (the
  server runs with ``jwt.required``, so it closes a Pusher connection that does not);
- the Laravel side of webhooks: echo-server posts the presence channels' webhooks to
  ``/echo/webhooks`` (signed with the demo app's secret), the backend keeps the admins online
  from ``presence-leads-management``'s ``member_added`` / ``member_removed``
  (``demo_webhooks``) and broadcasts the list as ``admins.online.updated`` when it changes:
  the page shows it next to the list it gets from presence itself.

The page runs on socket.io Echo by default; ``?stack=echo2-reverb`` (``Demo.page_url`` adds
the app's public key) runs it on Echo's ``reverb`` broadcaster over pusher-js instead.

Events reach the server in-process (``memory://``) by default, so the demo works on a fresh
machine without Redis; ``--redis URL`` makes the backend publish to Redis as Laravel does and
the server subscribe to it.

About 570 lines because the backend plays a whole small Laravel app: login, its leads,
assignments, `/broadcasting/auth`, user sign-in, webhooks. The `Demo` that runs it next to the
server is here too. Splitting the two would only move the seed data they share.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import secrets
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from echo_common.signing import sign

from ..web.demo_files import BUILD_HINT, DEMO_DIR, DemoFiles
from .webhooks import OnlineAdmins, WebhookInbox, WebhookRefused

if TYPE_CHECKING:
    from aiohttp import web

    from broadcaster.events import LaravelEvent

    from ..process.server import EchoServer

log = logging.getLogger("echo_server.demo")

PRESENCE_CHANNEL = "presence-leads-management"
WEBHOOK_PATH = "/echo/webhooks"
DEMO_APP_ID = "lead-panel"
REVERB_STACK = "echo2-reverb"  # clients/js/src/stacks.js: Echo's reverb over pusher-js
DASHBOARD = re.compile(r"^private-admin-dashboard\.(\d+)$")
SOCKET_ID = re.compile(r"^[A-Za-z0-9_\-.#]{1,128}$")
PUSHER_SOCKET_ID = re.compile(r"[0-9]+\.[0-9]+")  # the only ids pusher-php-server signs for
DEFAULT_BACKEND_PORT = 8080
RENEWAL_GRACE = 86400  # seconds after expiry a token may still be renewed (a page that slept)



def _admin(admin_id: int, name: str, email: str, count: int, maximum: int) -> dict[str, Any]:
    """AdminResource::toArray()."""
    return {"id": admin_id, "name": name, "email": email, "leads_assigned_count": count,
            "max_leads_per_day": maximum}


STATUSES = {1: "Yeni", 2: "İletişimde", 3: "Teklif Gönderildi", 4: "Kazanıldı"}

SEED_ADMINS = [
    _admin(1, "Ayşe Yılmaz", "ayse@example.com", 6, 10),
    _admin(2, "Mehmet Demir", "mehmet@example.com", 5, 8),
    _admin(3, "Elif Şahin", "elif@example.com", 3, 12),
]

# (id, name, phone, status id, assigned admin id)
SEED_LEADS = [
    (101, "Zeynep Kaya", "+90 532 111 22 33", 1, 1),
    (102, "Burak Öztürk", "+90 533 222 33 44", 2, 2),
    (103, "Selin Arslan", "+90 535 333 44 55", 1, None),
    (104, "Emre Çelik", "+90 536 444 55 66", 3, 3),
    (105, "Deniz Aydın", "+90 537 555 66 77", 1, None),
    (106, "Can Koç", "+90 538 666 77 88", 2, 1),
    (107, "Ece Demirtaş", "+90 539 777 88 99", 1, 2),
    (108, "Oğuz Yıldız", "+90 530 888 99 00", 4, 3),
]


@dataclass
class DemoState:
    """What the Laravel app's database would hold, in memory."""

    admins: dict[int, dict[str, Any]] = field(default_factory=dict)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def seed(cls) -> DemoState:
        state = cls({a["id"]: copy.deepcopy(a) for a in SEED_ADMINS})
        for lead_id, name, phone, status, admin_id in SEED_LEADS:
            state.leads[lead_id] = {"id": lead_id, "name": name, "phone": phone,
                                    "email": f"lead{lead_id}@example.com",
                                    "lead_status_id": status, "assigned_admin_id": admin_id}
        return state

    def admin_resource(self, admin_id: int | None) -> dict[str, Any] | None:
        return None if admin_id is None else dict(self.admins[admin_id])

    def lead_resource(self, lead_id: int) -> dict[str, Any]:
        """LeadResource::toArray() of ``$lead->fresh(['leadStatus', 'assignedAdmin'])``."""
        lead = self.leads[lead_id]
        status = lead["lead_status_id"]
        return {"id": lead["id"], "name": lead["name"], "phone": lead["phone"],
                "email": lead["email"], "lead_status": {"id": status, "name": STATUSES[status]},
                "assigned_admin": self.admin_resource(lead["assigned_admin_id"])}


# --------------------------------------------------------------------------- the backend


class DemoBackend:
    """The Laravel app's part: sessions, channel authorization, leads, broadcasting, and
    the webhooks echo-server sends it."""

    def __init__(self, *, secret: str, app_key: str, app_secret: str,
                 publish_url: str = "memory://", host: str = "127.0.0.1",
                 port: int = DEFAULT_BACKEND_PORT, token_ttl: float = 600.0,
                 key_prefix: str = "") -> None:
        from broadcaster import Broadcaster

        self.secret = secret
        self.publish_url = publish_url
        self.host = host
        self.port = port
        self.token_ttl = token_ttl
        self.app_key = app_key
        self.app_secret = app_secret
        self.state = DemoState.seed()
        self.webhooks = WebhookInbox(app_key, app_secret)
        self.online = OnlineAdmins(PRESENCE_CHANNEL, self.state.admins.keys())
        options = {"key_prefix": key_prefix} if key_prefix else {}
        self.broadcaster = Broadcaster(publish_url, **options)
        self.issued: dict[int, list[str]] = {}  # admin id -> token ids, oldest first
        self.auth_calls: list[tuple[str, int | None, int]] = []  # channel, admin, status
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    async def start(self) -> None:
        # aiohttp only here: the CLI imports this module, and starts fast.
        from aiohttp import web

        app = web.Application(middlewares=[_cors_middleware()])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/session", self._session)
        app.router.add_post("/api/token", self._token)
        app.router.add_get("/api/leads", self._leads)
        app.router.add_post("/api/leads/{lead_id}/assign", self._assign)
        app.router.add_post("/broadcasting/auth", self._broadcasting_auth)
        app.router.add_post("/broadcasting/user-auth", self._user_auth)
        app.router.add_post(WEBHOOK_PATH, self._webhook)
        app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(Exception):
            await self.broadcaster.close()

    # -- tokens
    def issue_token(self, admin_id: int) -> str:
        import jwt

        admin = self.state.admins[admin_id]
        now = int(time.time())
        jti = secrets.token_hex(8)
        self.issued.setdefault(admin_id, []).append(jti)
        claims = {"sub": str(admin_id), "name": admin["name"], "role": "admin", "iat": now,
                  "exp": now + max(1, int(self.token_ttl)), "jti": jti}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def _admin_from(self, request: web.Request, *, allow_expired: bool = False) -> int | None:
        """The admin of a valid ``Authorization: Bearer`` JWT, else None (``allow_expired``:
        one that expired less than a day ago still counts)."""
        import jwt

        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        try:
            claims = jwt.decode(header[7:].strip(), self.secret, algorithms=["HS256"],
                                leeway=RENEWAL_GRACE if allow_expired else 0)
            admin_id = int(claims["sub"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            return None
        return admin_id if admin_id in self.state.admins else None

    # -- routes
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return _json({"demo": "echo-server lead management backend",
                                  "routes": ["/api/session?admin=<id>", "/api/token",
                                             "/api/leads", "/api/leads/{id}/assign",
                                             "/broadcasting/auth", "/broadcasting/user-auth",
                                             WEBHOOK_PATH]})

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.Response(status=204)

    async def _session(self, request: web.Request) -> web.StreamResponse:
        try:
            admin_id = int(request.query.get("admin", ""))
        except ValueError:
            admin_id = -1
        if admin_id not in self.state.admins:
            return _error(404, "no such admin; the demo has admins "
                          + ", ".join(str(i) for i in self.state.admins))
        return _json({"token": self.issue_token(admin_id),
                      "admin": self.state.admin_resource(admin_id), "expires_in": self.token_ttl})

    async def _token(self, request: web.Request) -> web.StreamResponse:
        """A new token for the bearer of a genuine one (recently expired ones too: the page
        may have slept through its expiry)."""
        admin_id = self._admin_from(request, allow_expired=True)
        if admin_id is None:
            return _error(401, "Unauthenticated.")
        return _json({"token": self.issue_token(admin_id), "expires_in": self.token_ttl})

    async def _leads(self, request: web.Request) -> web.StreamResponse:
        if self._admin_from(request) is None:
            return _error(401, "Unauthenticated.")
        return _json({**self._listing(), "online_admin_ids": self.online.ids})

    def _listing(self) -> dict[str, Any]:
        return {"leads": [self.state.lead_resource(i) for i in sorted(self.state.leads)],
                "admins": [self.state.admin_resource(i) for i in sorted(self.state.admins)]}

    async def _assign(self, request: web.Request) -> web.StreamResponse:
        """``LeadAssignmentController@update``: save, then ``broadcast(...)->toOthers()``."""
        from broadcaster.events import admin_capacity_updated, lead_assigned

        actor = self._admin_from(request)
        if actor is None:
            return _error(401, "Unauthenticated.")
        try:
            lead_id = int(request.match_info["lead_id"])
            body = await request.json()
            raw = body.get("admin_id") if isinstance(body, dict) else None
            new_id = None if raw is None else int(raw)
        except (ValueError, TypeError, json.JSONDecodeError):
            return _error(422, "admin_id must be an admin's id or null")
        if lead_id not in self.state.leads:
            return _error(404, "no such lead")
        if new_id is not None and new_id not in self.state.admins:
            return _error(422, "no such admin")
        lead = self.state.leads[lead_id]
        old_id = lead["assigned_admin_id"]
        events = []
        if new_id != old_id:
            lead["assigned_admin_id"] = new_id
            changes = [(new_id, 1), (old_id, -1)]
            for admin_id, change in changes:
                if admin_id is not None:
                    admin = self.state.admins[admin_id]
                    admin["leads_assigned_count"] = max(0, admin["leads_assigned_count"] + change)
            events.append(lead_assigned(
                self.state.lead_resource(lead_id), self.state.admin_resource(new_id),
                self.state.admin_resource(old_id), self.state.admins[actor]))
            events += [admin_capacity_updated(self.state.admins[admin_id], change)
                       for admin_id, change in changes if admin_id is not None]
        socket = request.headers.get("X-Socket-ID", "").strip() or None
        if socket is not None and not SOCKET_ID.match(socket):
            socket = None  # Laravel ignores a malformed X-Socket-ID too
        broadcast_error = await self._broadcast(events, socket)
        answer = {"lead": self.state.lead_resource(lead_id), **self._listing(),
                  "broadcast": broadcast_error or ("sent" if events else "unchanged")}
        return _json(answer)

    async def _broadcasting_auth(self, request: web.Request) -> web.StreamResponse:
        """``Broadcast::channel()`` rules of routes/channels.php, answered as Laravel's
        ``reverb`` / ``pusher`` driver (PusherBroadcaster) does: ``auth``, the app's
        signature of ``socket_id:channel[:channel_data]``, and for presence ``channel_data``
        as the JSON text signed."""
        form = await request.post()
        channel = str(form.get("channel_name", ""))
        socket_id = str(form.get("socket_id", ""))
        admin_id = self._admin_from(request)
        signed: str | None = None
        answer: dict[str, str] = {}
        # Laravel's driver refuses any other socket id too ("Invalid socket ID").
        if admin_id is not None and PUSHER_SOCKET_ID.fullmatch(socket_id):
            match = DASHBOARD.match(channel)
            if match and int(match.group(1)) == admin_id:
                signed = f"{socket_id}:{channel}"
            elif channel == PRESENCE_CHANNEL:
                admin = self.state.admins[admin_id]
                answer["channel_data"] = json.dumps(
                    {"user_id": admin_id, "user_info": {"id": admin_id, "name": admin["name"]}})
                signed = f"{socket_id}:{channel}:{answer['channel_data']}"
        self.auth_calls.append((channel, admin_id, 200 if signed is not None else 403))
        if signed is None:
            return _error(403, "This action is unauthorized.")
        return _json({"auth": self._signature(signed), **answer})

    async def _user_auth(self, request: web.Request) -> web.StreamResponse:
        """``BroadcastController@authenticateUser`` with the ``reverb`` / ``pusher`` driver
        and ``Broadcast::resolveAuthenticatedUserUsing()`` giving the logged-in admin:
        ``user_data``, the user as JSON text, and ``auth``, the app's signature of
        ``socket_id::user::user_data``, which pusher-js sends on in ``pusher:signin``."""
        form = await request.post()
        socket_id = str(form.get("socket_id", ""))
        admin_id = self._admin_from(request)
        if admin_id is None or not PUSHER_SOCKET_ID.fullmatch(socket_id):
            return _error(403, "This action is unauthorized.")
        # The id as a string: pusher-js drops a sign-in whose user_data id is not one.
        user_data = json.dumps({"id": str(admin_id), "name": self.state.admins[admin_id]["name"]})
        return _json({"auth": self._signature(f"{socket_id}::user::{user_data}"),
                      "user_data": user_data})

    def _signature(self, text: str) -> str:
        """``<key>:<hex HMAC-SHA256 with the app's secret>``, as pusher-php-server signs."""
        return f"{self.app_key}:{sign(self.app_secret, text)}"

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        """echo-server's webhooks (``EchoWebhookController`` in the README): the admins
        online follow the presence channel's members, and the pages hear when they change."""
        body = await request.read()
        before = self.online.ids
        try:
            self.webhooks.take(request.headers, body, self.online.apply)
        except WebhookRefused as refused:
            log.warning("demo: webhook refused (%d): %s", refused.status, refused)
            return _error(refused.status, str(refused))
        if self.online.ids != before:
            await self._broadcast([admins_online_updated(self.online.ids)])
        return _json({"ok": True})

    async def _broadcast(self, events: list[LaravelEvent],
                         socket: str | None = None) -> str | None:
        """Every event, each failure logged; the saved change stands, as with a failed
        queue job. The last failure, or None."""
        failure = None
        for event in events:
            try:
                await self.broadcaster.broadcast(event, socket=socket)
            except Exception as error:
                failure = f"{type(error).__name__}: {error}"
                log.warning("demo: broadcasting %s failed: %s", event.name, failure)
        return failure


def admins_online_updated(admin_ids: list[int]) -> LaravelEvent:
    """``AdminsOnlineUpdated`` of the README: on ``leads-management``, the whole list (a
    page that missed one event is right again with the next)."""
    from broadcaster.events import LEADS_MANAGEMENT, LaravelEvent, iso_timestamp

    return LaravelEvent(channels=(LEADS_MANAGEMENT,), name="admins.online.updated",
                        payload={"online_admin_ids": admin_ids, "timestamp": iso_timestamp()})


def _json(data: Any, status: int = 200) -> web.StreamResponse:
    from aiohttp import web

    return web.json_response(data, status=status)


def _error(status: int, message: str) -> web.StreamResponse:
    return _json({"message": message}, status)


def _cors_middleware() -> Any:
    from aiohttp import web

    @web.middleware
    async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
        """The page comes from echo-server's port, the API from this one: allow it. Tokens
        travel in headers, never cookies, so no credentials are allowed cross-origin."""
        response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, Accept, X-Socket-ID, X-Requested-With")
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    return cors


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --------------------------------------------------------------------------- wiring


class Demo:
    """Backend and echo server together; the server can be stopped and started again on the
    same port (what the end-to-end test does to watch the pages reconnect)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6001,
                 backend_port: int = DEFAULT_BACKEND_PORT,
                 socketio: Mapping[str, Any] | None = None,
                 pusher: Mapping[str, Any] | None = None, token_ttl: float = 600.0,
                 redis_url: str | None = None, demo_dir: Path | None = None) -> None:
        self.host = host
        self.port = port
        # Into the config's `socketio` and `pusher` sections (tests shorten their timeouts).
        self.socketio = dict(socketio or {})
        self.pusher = dict(pusher or {})
        self.redis_url = redis_url
        self.demo_dir = demo_dir
        self.secret = secrets.token_urlsafe(48)  # the JWTs'
        self.app_key = secrets.token_hex(16)  # the app's, which signs its webhooks
        self.app_secret = secrets.token_urlsafe(32)
        self.backend = DemoBackend(secret=self.secret, app_key=self.app_key,
                                   app_secret=self.app_secret,
                                   publish_url=redis_url or "memory://", host=host,
                                   port=backend_port, token_ttl=token_ttl)
        self.server: EchoServer | None = None

    @property
    def publish_route(self) -> str:
        if self.redis_url:
            from broadcaster.sources.base import display_url

            return f"via {display_url(self.redis_url)}"
        return "in-process (memory://; no Redis needed)"

    def config_options(self) -> dict[str, Any]:
        """The echo server's laravel-echo-server.json for the demo."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "authHost": self.backend.url,
            "authEndpoint": "/broadcasting/auth",
            "database": "sqlite",  # presence in memory
            "subscribers": {"http": True, "redis": False},
            "jwt": {"algorithms": ["HS256"], "secret": self.secret, "required": True},
            # The backend hears who comes and goes; small batches, so the page shows it soon.
            "clients": [{"appId": DEMO_APP_ID, "key": self.app_key, "secret": self.app_secret,
                         "webhooks": [{"url": self.backend.url + WEBHOOK_PATH,
                                       "event_types": ["channel_occupied", "channel_vacated",
                                                       "member_added", "member_removed"],
                                       "filter": {"channel_name_starts_with": "presence-"}}]}],
            "webhooks": {"batchMs": 100, "pollMs": 20},
            # A page whose connection drops comes back with what it missed.
            # A reload within the grace tells the backend nothing; a closed page shows
            # offline in its "online per Laravel" list two seconds later.
            "socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 120_000},
                         "presenceGraceMs": 2000,
                         **self.socketio},
            "pusher": self.pusher,
        }
        if self.redis_url:
            options["sources"] = [self.redis_url]
        return options

    def _config(self) -> Any:
        from .. import config as cfg

        with tempfile.TemporaryDirectory(prefix="echo-server-demo-") as directory:
            path = Path(directory) / cfg.DEFAULT_CONFIG_FILE
            path.write_text(json.dumps(self.config_options()), encoding="utf-8")
            return cfg.load_config(cfg.DEFAULT_CONFIG_FILE, directory, environ={},
                                   cwd=directory)

    async def start(self) -> None:
        await self.backend.start()
        try:
            await self.start_server()
        except BaseException:
            await self.backend.stop()
            raise

    async def start_server(self) -> EchoServer:
        from ..process.server import EchoServer

        server = EchoServer(self._config())
        if self.demo_dir is not None:
            server.demo_files = DemoFiles(self.demo_dir)
        await server.start()
        self.server = server
        self.port = server.port  # a restart reuses it
        return server

    async def stop_server(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop(timeout=2)

    async def stop(self) -> None:
        await self.stop_server()
        await self.backend.stop()

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def page_url(self, admin_id: int = 1, **params: str) -> str:
        """The page for an admin; ``stack=echo2-reverb`` also gets the app's key, which
        pusher-js connects with (a public value: every Reverb page ships it)."""
        query = f"admin={admin_id}"
        if self.backend.port != DEFAULT_BACKEND_PORT or _url_host(self.host) != "127.0.0.1":
            query += "&api=" + quote(self.backend.url, safe=":/")
        if params.get("stack") == REVERB_STACK:
            params = {"key": self.app_key, **params}
        for key, value in params.items():
            query += f"&{quote(key)}={quote(str(value), safe='')}"
        return f"{self.url}/demo/?{query}"

    def built(self) -> bool:
        return ((self.demo_dir or DEMO_DIR) / "index.html").is_file()


async def run_demo(*, host: str, port: int, backend_port: int, redis_url: str | None,
                   token_ttl: float) -> int:
    """Start both, print where to look, run until SIGINT/SIGTERM."""
    demo = Demo(host=host, port=port, backend_port=backend_port, redis_url=redis_url,
                token_ttl=token_ttl)
    if not demo.built():  # no page URLs that answer 404: what to run instead
        log.error("the demo page is not installed (%s has no index.html), so there is nothing "
                  "to open. Get it with: %s", DEMO_DIR, BUILD_HINT)
        return 1
    try:
        await demo.start()
    except OSError as error:
        log.error("cannot start the demo: %s", error)
        return 1
    admins = sorted(demo.backend.state.admins.values(), key=lambda a: a["id"])
    lines = ["", "echo-server demo: lead management, live", ""]
    lines += [f"  {a['name']:<14} {demo.page_url(a['id'])}" for a in admins[:2]]
    lines += ["", "  The same on Echo's reverb broadcaster over pusher-js (the Pusher protocol):",
              f"  {admins[1]['name']:<14} {demo.page_url(admins[1]['id'], stack=REVERB_STACK)}"]
    lines += ["", "  Open two of them (two windows) and reassign a lead in one.",
              f"  echo-server   {demo.url}  (Socket.IO, Pusher /app/<key>, /demo, /status)",
              f"  demo backend  {demo.backend.url}  (the Laravel app's part: "
              "/broadcasting/auth, /api/...)",
              f"  events        {demo.publish_route}"]
    lines += ["", "  Ctrl+C stops both.", ""]
    print("\n".join(lines), flush=True)

    from ..process.server import wait_for_stop_signal

    await wait_for_stop_signal()
    await demo.stop()
    return 0
