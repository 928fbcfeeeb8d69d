"""Where apps come from, behind one small interface, in the style of ``broadcaster``'s
sources: a store is started, answers lookups by key (what a Pusher client and a signed
request bring) and by id (what an HTTP API path names), lists its apps, and is closed.

A lookup answers an ``App`` (enabled or not: the protocol decides how to refuse a disabled
one), ``None`` for a key the store does not have, or raises ``AppsUnavailable`` when it
cannot tell right now (the database is away, or its lookup budget is spent): a protocol
answers that with its "try again later" error, never with "unknown app", since pusher-js
stops reconnecting on 4001.

A protocol's hot path (a publish, an upgrade) must not wait for a task when the answer is
in memory: ``cached`` answers at once from what the store holds (the file's apps, the
database's cache), or None when only an awaited lookup can tell. ``watch`` hears which keys
changed (a reload, a NOTIFY; None: any of them), so open connections follow their app.

Socket.IO finds an app by where its page connects (a host name, a path), which an attacker
chooses freely: never by a lookup per handshake, but in an index of the apps that own such an
endpoint (``socketio_apps``), read whole at start and again for the keys a change names
(adapters/socketio_apps.py).

The writing side (``add`` an ``apps`` entry, ``remove`` by id) is what the ``apps:*``
commands use; a read-only store refuses it with ``AppStoreError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from .model import App


class AppStoreError(Exception):
    """An operation the store cannot do; the message is for the operator."""


class AppsUnavailable(Exception):
    """The store cannot tell now whether the app exists: refuse with "try again later"."""


Lookup = Literal["key", "id"]
# Told the keys of the apps that changed (None: any app may have), after the change.
ChangeListener = Callable[[frozenset[str] | None], None]


class AppStore:
    kind = "static"
    writable = False
    # How many apps with Socket.IO endpoints it may hand ``socketio_apps`` (None: as many as
    # it lists, a file's).
    max_socketio_apps: int | None = None
    listeners: list[ChangeListener]

    def watch(self, listener: ChangeListener) -> None:
        self.listeners = [*getattr(self, "listeners", ()), listener]

    def changed(self, keys: frozenset[str] | None) -> None:
        for listener in getattr(self, "listeners", ()):
            listener(keys)

    def cached(self, lookup: Lookup, name: str) -> tuple[App, ...] | None:
        """The apps known now with that key (at most one) or id (the legacy ``clients`` may
        share one), ``()`` when known to have none, None when ``by_key``/``by_id`` must be
        awaited to tell."""
        return None

    async def start(self) -> None:
        """Connect and load; an unreachable backend raises here only if nothing can work."""

    async def close(self) -> None:
        """Release connections and tasks."""

    async def by_key(self, key: str) -> App | None:
        raise NotImplementedError

    async def by_id(self, app_id: str) -> App | None:
        raise NotImplementedError

    async def all(self) -> list[App]:
        raise NotImplementedError

    async def socketio_apps(self, keys: frozenset[str] | None = None) -> list[App]:
        """The apps that own a Socket.IO endpoint (``App.serves_socketio``); only those
        with one of ``keys`` when given. Raises ``AppsUnavailable`` when it cannot tell."""
        return [app for app in await self.all()
                if app.serves_socketio and (keys is None or app.key in keys)]

    def parts(self) -> tuple[AppStore, ...]:
        """The stores this one answers from, in order (each tells its own changes)."""
        return (self,)

    async def add(self, entry: Mapping[str, Any]) -> App:
        """An ``apps`` entry (the file's names), validated by the model, then stored."""
        raise AppStoreError(f"the {self.kind} store is read-only")

    async def remove(self, app_id: str) -> bool:
        raise AppStoreError(f"the {self.kind} store is read-only")


class StaticStore(AppStore):
    """Apps known at start (the file, Reverb's ``.env``): two dicts."""

    def __init__(self, apps: Iterable[App] = ()) -> None:
        self.replace(apps)

    def replace(self, apps: Iterable[App]) -> None:
        """A reload's apps, at once: a lookup sees the old set or the new one."""
        listed = self._listed = list(apps)
        self._by_key = {app.key: (app,) for app in listed}  # the last of a key wins
        by_id: dict[str, tuple[App, ...]] = {}
        for app in listed:
            by_id[app.id] = (*by_id.get(app.id, ()), app)
        self._by_id = by_id
        self.changed(None)

    def cached(self, lookup: Lookup, name: str) -> tuple[App, ...]:
        return (self._by_key if lookup == "key" else self._by_id).get(name, ())

    async def by_key(self, key: str) -> App | None:
        found = self._by_key.get(key)
        return found[0] if found else None

    async def by_id(self, app_id: str) -> App | None:
        found = self._by_id.get(app_id)
        return found[0] if found else None

    def cached_all(self) -> list[App]:
        """Every app, in the file's order (what the status page's keys are read from)."""
        return list(self._listed)

    async def all(self) -> list[App]:
        return self.cached_all()


class ChainStore(AppStore):
    """The file's apps first (the default app's ``clients`` must keep working whatever else
    is configured), then a database's: the first store that knows the key answers."""

    def __init__(self, *stores: AppStore) -> None:
        self.stores = stores
        self.kind = "+".join(store.kind for store in stores)
        self.writable = stores[-1].writable

    def watch(self, listener: ChangeListener) -> None:
        for store in self.stores:
            store.watch(listener)

    def parts(self) -> tuple[AppStore, ...]:
        return self.stores

    def cached(self, lookup: Lookup, name: str) -> tuple[App, ...] | None:
        """The first store's answer that has apps; None as soon as one cannot tell."""
        for store in self.stores:
            found = store.cached(lookup, name)
            if found is None or found:
                return found
        return ()

    async def start(self) -> None:
        for store in self.stores:
            await store.start()

    async def close(self) -> None:
        for store in reversed(self.stores):
            await store.close()

    async def by_key(self, key: str) -> App | None:
        return await self._first("by_key", key)

    async def by_id(self, app_id: str) -> App | None:
        return await self._first("by_id", app_id)

    async def _first(self, lookup: str, name: str) -> App | None:
        for store in self.stores:
            app = await getattr(store, lookup)(name)
            if app is not None:
                return app
        return None

    async def all(self) -> list[App]:
        return [app for store in self.stores for app in await store.all()]

    async def add(self, entry: Mapping[str, Any]) -> App:
        known = await self.by_key(str(entry.get("key")))
        if known is not None:
            raise AppStoreError(f"the key {known.key!r} is app {known.id!r}'s already")
        return await self.stores[-1].add(entry)

    async def remove(self, app_id: str) -> bool:
        return await self.stores[-1].remove(app_id)
