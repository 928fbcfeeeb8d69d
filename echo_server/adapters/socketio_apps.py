"""Which app owns a Socket.IO handshake: the default app's ``/socket.io/``, or an isolated
app's own host name or path (apps/model.py: ``hosts``, ``socketioPath``).

Both are what whoever connects chooses, so the answer comes from memory alone: an index of
the apps that own an endpoint, from every store, read whole at start (and whenever a store
says anything may have changed: a reload, the database's listener back after a reconnect,
when a NOTIFY may have been missed), and for the keys a change names otherwise (a NOTIFY).
Those reads happen one at a time and in order, in a task of their own, so a handshake never
waits for a query nor causes one, and a late answer never overwrites a newer one. The index
is bounded by the stores (``appManager.maxSocketioApps``) and the model (hosts per app, a
path's length).

An endpoint leads to one app: the first store's claim wins (the file's over the database's),
then the lowest app id; a claim that loses, or a path over the default app's, is logged and
not served. When an endpoint changes hands, the sockets that came through it follow
(``EchoSocketIo.follow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from channel_auth import AuthRequest, AuthResult, ChannelAuthorizer

from ..apps.authorizers import NoAuthHost, isolated_authorizer
from ..apps.endpoints import BUNDLE, overlaps
from ..apps.model import App
from ..apps.store import AppStore, StaticStore
from ..core.channels import ErrorReporter
from ..core.limits import ConnectionBounds
from ..core.presence_flow import PresenceFlow
from ..core.tasks import cancel_tasks, close_later
from ..transport.origins import page_origin
from .app_bounds import write_bounds
from .presence_bounds import PresenceBounds, as_they_are

log = logging.getLogger("echo_server.socketio_apps")

# Keys changed while a read was under way, read together next; beyond this many (a bulk
# UPDATE's NOTIFYs), the next read is of all of them.
MAX_PENDING_KEYS = 1000
CallbackFactory = Callable[[App], ChannelAuthorizer]  # an app's /broadcasting/auth
Claims = dict[str, App]  # by key: one store's apps that own an endpoint


class _Made(NamedTuple):
    """A served app's authorizer, with what it was made of: a rebuild that finds both the
    same objects (a NOTIFY named another app) keeps it rather than make it again."""

    app: App
    callback: ChannelAuthorizer | None
    authorizer: ChannelAuthorizer


class NotServed(Exception):
    """A session opened at a path no app serves any more."""


class _Refused:
    """The authorizer of a tag the index no longer knows: its private channels are
    refused, never asked of the default app's /broadcasting/auth."""

    async def authorize(self, request: AuthRequest) -> AuthResult:
        return AuthResult(403, reason="the app no longer serves Socket.IO here")


REFUSED: ChannelAuthorizer = _Refused()


def host_name(headers: dict[str, str]) -> str:
    """The Host header's name, without its port, as an app's ``hosts`` list it."""
    host = headers.get("host", "").lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def _endpoints(index: dict[str, App]) -> dict[str, tuple[str, bool]]:
    return {endpoint: (app.tag, app.enabled) for endpoint, app in index.items()}


class SocketIoApps:
    """The index, and each served app's authorizer (its rules, then its own
    /broadcasting/auth) by tag. ``on_change`` is told when an endpoint changed hands or
    its app was enabled or disabled."""

    def __init__(self, store: AppStore, default_path: str, callback: CallbackFactory,
                 report_error: ErrorReporter, presence: PresenceFlow, *, retry: float = 1.0,
                 close_grace: float = 10.0) -> None:
        self.default_path = "/" + default_path.strip("/")
        self._default_prefix = self.default_path + "/"
        self._stores: Sequence[AppStore] = store.parts()
        self._callback = callback
        self._report = report_error
        self._presence = presence  # the core's: each app's presence bounds count there
        self.retry = retry  # seconds between attempts while a store cannot be read
        self.close_grace = close_grace  # an unused /broadcasting/auth pool lives this long
        self.by_host: dict[str, App] = {}
        self.by_path: dict[str, App] = {}
        self._authorizers: dict[str, _Made] = {}  # by tag
        self._bounds: dict[str, ConnectionBounds] = {}  # by tag, changed in place
        self._callbacks: dict[tuple[str, str], ChannelAuthorizer] = {}
        self._claims: list[Claims] = [{} for _ in self._stores]
        self._pending: dict[int, frozenset[str] | None] = {}  # store -> keys (None: all)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()  # the reads, and close_later's
        self.on_change: Callable[[], None] | None = None
        for number, part in enumerate(self._stores):
            part.watch(functools.partial(self._changed, number))
            if isinstance(part, StaticStore):  # already loaded: read now
                self._changed(number, None)

    # -- the handshake's side: memory only -----------------------------------------------
    def matches(self, path: str) -> bool:
        """A request Socket.IO answers: under the default path, or at a served app's path
        (``/tenant/socket.io/``, and the client bundle beside it)."""
        if path.startswith(self._default_prefix) or path == self.default_path:
            return True
        paths = self.by_path
        if not paths:
            return False
        head, _, name = path.rpartition("/")
        return path in paths or (head in paths and (not name or name in BUNDLE))

    def owner(self, path: str, headers: dict[str, str]) -> App | None:
        """The app a handshake at ``path`` belongs to; None for the default app. Raises
        NotServed for a path no app serves now (it was removed since the session opened)."""
        if path.startswith(self._default_prefix) or path == self.default_path:
            return self.by_host.get(host_name(headers)) if self.by_host else None
        app = self.by_path.get(path.rstrip("/"))
        if app is None:
            raise NotServed(path)
        return app

    def authorizer(self, tag: str) -> ChannelAuthorizer:
        """An isolated app's (``tag``) authorizer for its Socket.IO clients."""
        made = self._authorizers.get(tag)
        return REFUSED if made is None else made.authorizer

    def bounds(self, tag: str) -> ConnectionBounds | None:
        """What each socket of a served app (``tag``) may do: one object per app, changed in
        place when the app changes, so its open sockets follow."""
        return self._bounds.get(tag)

    def origin_allowed(self, path: str, headers: dict[str, str], origin: str | None) -> bool:
        """At a handshake (``EngineOptions.owner_origin_allowed``): an isolated app's own
        ``allowedOrigins``, as for its Pusher clients (a page that sends neither Origin nor
        Referer is refused by a list). The default app's: ``socketio.origins`` alone."""
        try:
            app = self.owner(path, headers)
        except NotServed:
            return True  # its CONNECT is answered "App not found"
        if app is None or app.origin_allowed(page_origin(origin)):
            return True
        self._report("bad_request", f"socket.io: a handshake from an origin app {app.id} "
                     "does not allow (allowedOrigins)")
        return False

    # -- keeping it current ---------------------------------------------------------------
    def _changed(self, number: int, keys: frozenset[str] | None) -> None:
        part = self._stores[number]
        if isinstance(part, StaticStore):  # in memory: at once, before the reload returns
            self._claims[number] = {app.key: app for app in part.cached_all()
                                    if app.serves_socketio}
            self._rebuild()
            return
        if number in self._pending:
            known = self._pending[number]
            keys = None if known is None or keys is None else known | keys
        self._pending[number] = keys if keys is None or len(keys) <= MAX_PENDING_KEYS else None
        self._idle.clear()
        self._wake.set()

    async def start(self, timeout: float) -> None:
        """Read what the stores hold (the database's, once it listens), waiting at most
        ``timeout`` for it: until then its apps' endpoints are not served."""
        task = asyncio.ensure_future(self._read_changes())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self) -> None:
        """At shutdown: the reads stop, and every callback is closed now, those in use
        retired like the others (cancelled, a ``close_later`` closes at once)."""
        for callback in self._callbacks.values():
            self._close_later(callback)
        self._callbacks = {}
        await cancel_tasks(list(self._tasks))

    async def _read_changes(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                number, keys = self._pending.popitem()
                try:
                    apps = await self._stores[number].socketio_apps(keys)
                except Exception as error:  # AppsUnavailable, or the store's own failure
                    self._report("apps_unavailable", f"the apps that own Socket.IO "
                                 f"endpoints cannot be read ({error}): the last ones read "
                                 f"are served; trying again in {self.retry:g} s")
                    self._changed(number, keys)
                    await asyncio.sleep(self.retry)
                    continue
                self._take(number, keys, apps)
                self._rebuild()
            self._idle.set()

    def _take(self, number: int, keys: frozenset[str] | None, apps: list[App]) -> None:
        claims = {} if keys is None else {key: app for key, app in self._claims[number].items()
                                          if key not in keys}
        most = self._stores[number].max_socketio_apps
        for app in apps:
            if most is not None and len(claims) >= most and app.key not in claims:
                self._report("app_endpoint_taken", f"app {app.id}'s Socket.IO endpoints are "
                             f"not served: {most} apps own some already (maxSocketioApps)")
                continue
            claims[app.key] = app
        self._claims[number] = claims

    def _rebuild(self) -> None:
        """The index from every store's claims, swapped in at once."""
        hosts: dict[str, App] = {}
        paths: dict[str, App] = {}
        authorizers: dict[str, _Made] = {}
        before = self._authorizers
        bounds: dict[str, ConnectionBounds] = {}
        used: set[tuple[str, str]] = set()
        for claims in self._claims:
            for app in sorted(claims.values(), key=lambda app: app.id):
                if app.tag in authorizers:
                    continue  # an id two stores hold: the first one's
                path = app.socketio_path
                if path and (path in paths or overlaps(path, self.default_path)):
                    self._taken(app, f"socketioPath {path!r}")
                elif path:
                    paths[path] = app
                for host in app.hosts:
                    if host in hosts:
                        self._taken(app, f"host {host!r}")
                    else:
                        hosts[host] = app
                callback = None
                if app.auth_host:
                    place = (app.auth_host, app.auth_endpoint)
                    used.add(place)
                    callback = self._callbacks.get(place)
                    if callback is None:
                        callback = self._callbacks[place] = self._callback(app)
                made = before.get(app.tag)
                if made is None or made.app is not app or made.callback is not callback:
                    # Its bounds on presence members, as its Pusher clients have them.
                    made = _Made(app, callback, PresenceBounds(
                        isolated_authorizer(app, callback or NoAuthHost()),
                        as_they_are(app.limits), self._presence))
                authorizers[app.tag] = made
                bounds[app.tag] = write_bounds(app, self._bounds.get(app.tag)
                                               or ConnectionBounds())
        moved = (_endpoints(hosts) != _endpoints(self.by_host)
                 or _endpoints(paths) != _endpoints(self.by_path))
        self.by_host, self.by_path, self._authorizers = hosts, paths, authorizers
        self._bounds = bounds
        for place in [place for place in self._callbacks if place not in used]:
            self._close_later(self._callbacks.pop(place))
        if moved and self.on_change is not None:
            self.on_change()

    def renew_callbacks(self, close_grace: float) -> None:
        """The callback factory's settings changed (a reload): every app's /broadcasting/auth
        is made again from them at once, not when its app next changes. Those it replaces are
        closed once the authorizations they started may have ended (the grace of before);
        ``close_grace`` is the new settings' grace, for those made now."""
        for callback in self._callbacks.values():
            self._close_later(callback)
        self._callbacks = {}
        self.close_grace = close_grace
        self._rebuild()

    def _taken(self, app: App, what: str) -> None:
        self._report("app_endpoint_taken", f"app {app.id}'s {what} is not served: another "
                     f"app (or the default app's {self.default_path}) has it")

    def _close_later(self, callback: ChannelAuthorizer) -> None:
        """Authorizations in flight on it finish first (``close`` cuts that short): within
        the grace of the settings it was made with, the one of now."""
        with contextlib.suppress(RuntimeError):  # outside a loop (built): it opened nothing
            task = asyncio.get_running_loop().create_task(close_later(callback,
                                                                      self.close_grace))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
