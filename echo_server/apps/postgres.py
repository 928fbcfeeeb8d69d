"""Apps in a PostgreSQL table, through asyncpg, seen live: a trigger on the table NOTIFYs
every insert, update, delete and truncate, and one listening connection drops what the
cache holds for that key and id, so a new app, a rotated secret or a disabled app takes
effect at the next lookup (milliseconds), without a restart.

Lookups go through ``cache.LookupCache`` (bounded, negative entries, single flight, a budget
of misses), so a flood of unknown keys does not reach the database once per attempt. When
the listening connection is lost (a restart, ``pg_terminate_backend``, a dead link found by
the periodic ping), it reconnects with backoff and jitter, and once listening again empties
the cache: NOTIFYs sent meanwhile are lost. Until then cached apps keep answering, and a
lookup that needs the database and cannot reach it raises ``AppsUnavailable``.

The schema (docs/apps.md) keeps the columns one queries or rotates (``id``, ``key``,
``secret``, ``name``, ``enabled``) apart, and every other option in ``options`` (jsonb) under
the file's names, so the one parser of ``model.py`` reads a row as it reads a file entry and a
new option needs no migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broadcaster.sources.postgres import quote_table

from .cache import CacheSettings, CacheStats, LookupCache, MissBudget
from .model import App, AppConfigError, parse_app
from .store import AppStore, AppStoreError, AppsUnavailable, Lookup

log = logging.getLogger("echo_server.apps")

APPLICATION_NAME = "echo-server apps"  # in pg_stat_activity: the listening connection
COLUMNS = ("id", "key", "secret", "name", "enabled")


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    url: str
    table: str = "echo_apps"
    cache: CacheSettings = field(default_factory=CacheSettings)
    connect_timeout: float = 5.0
    ping: float = 15.0  # an idle listening connection is checked this often
    reconnect_min: float = 0.1
    reconnect_max: float = 10.0
    pool_size: int = 4
    # Apps with Socket.IO endpoints held in memory (adapters/socketio_apps.py); beyond it
    # the first ones (by creation) are served and the rest logged.
    max_socketio_apps: int = 10_000


def schema(table: str) -> str:
    """The table, its NOTIFY trigger (channel: the table's name) and the function behind it;
    idempotent, so ``apps:migrate`` may run at every deploy."""
    quoted = quote_table(table)
    *schema_name, name = table.split(".")
    function = quote_table(".".join([*schema_name, f"{name}_notify"]))
    channel = table.replace("'", "''")
    return f"""
CREATE TABLE IF NOT EXISTS {quoted} (
    id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    key text NOT NULL UNIQUE CHECK (length(key) BETWEEN 1 AND 255),
    secret text NOT NULL CHECK (secret <> ''),
    name text,
    enabled boolean NOT NULL DEFAULT true,
    options jsonb NOT NULL DEFAULT '{{}}'::jsonb CHECK (jsonb_typeof(options) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('{channel}', '{{"all": true}}');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('{channel}', json_build_object('id', NEW.id, 'key', NEW.key)::text);
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM pg_notify('{channel}', json_build_object(
            'id', NEW.id, 'key', NEW.key, 'old_id', OLD.id, 'old_key', OLD.key)::text);
    ELSE
        PERFORM pg_notify('{channel}', json_build_object('id', OLD.id, 'key', OLD.key)::text);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS "{name}_notify" ON {quoted};
CREATE TRIGGER "{name}_notify" AFTER INSERT OR UPDATE OR DELETE ON {quoted}
    FOR EACH ROW EXECUTE PROCEDURE {function}();
DROP TRIGGER IF EXISTS "{name}_truncate" ON {quoted};
CREATE TRIGGER "{name}_truncate" AFTER TRUNCATE ON {quoted}
    FOR EACH STATEMENT EXECUTE PROCEDURE {function}();
"""


class PostgresStore(AppStore):
    kind = "postgres"
    writable = True

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.max_socketio_apps = settings.max_socketio_apps
        self.table = settings.table
        self._table_sql = quote_table(settings.table)
        self.stats = CacheStats()
        budget = MissBudget(settings.cache.misses_per_second, settings.cache.miss_burst)
        self.by_keys = LookupCache(settings.cache, budget, self.stats)
        self.by_ids = LookupCache(settings.cache, budget, self.stats)
        self.listening = asyncio.Event()
        self.reconnects = 0
        self._pool: Any = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen in the background; wait up to the connect timeout for the first LISTEN, so
        the first lookups do not all find the database away. A database that is down at
        start is logged and retried, not fatal: the file's apps keep working."""
        self._task = asyncio.ensure_future(self._listen_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), self.settings.connect_timeout)
        if not self.listening.is_set():
            log.warning("apps: PostgreSQL store %s not reachable yet; retrying", self.table)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5.0)

    async def _connection_pool(self) -> Any:
        if self._pool is None:
            import asyncpg

            # A pool replaces a connection that broke (a restart) at its next use.
            self._pool = await asyncpg.create_pool(
                self.settings.url, min_size=0, max_size=self.settings.pool_size,
                timeout=self.settings.connect_timeout)
        return self._pool

    async def _listen_forever(self) -> None:
        delay = self.settings.reconnect_min
        while True:
            try:
                await self._listen_once()
                delay = self.settings.reconnect_min  # it was up: start the backoff again
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("apps: listening to %s failed (%s: %s); retrying in %.1f s",
                            self.table, type(error).__name__, error, delay)
            self.listening.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(self.settings.reconnect_max, delay * 2)
            self.reconnects += 1

    async def _listen_once(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.settings.url, timeout=self.settings.connect_timeout,
                                     server_settings={"application_name": APPLICATION_NAME})
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.table, self._notified)
            self.clear()  # what changed while nobody listened is unknown
            self.listening.set()
            log.info("apps: listening to changes of %s", self.table)
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self.settings.ping)
                except TimeoutError:
                    # An idle LISTEN connection never reads: a link that died silently (no
                    # FIN/RST) is only noticed by asking something.
                    await conn.fetchval("SELECT 1", timeout=self.settings.connect_timeout)
            log.warning("apps: PostgreSQL closed the listening connection of %s", self.table)
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                conn.terminate()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            change = json.loads(payload)
        except ValueError:
            change = {"all": True}
        if not isinstance(change, dict) or change.get("all"):
            self.clear()
            return
        keys = frozenset(change[name] for name in ("key", "old_key")
                         if isinstance(change.get(name), str))
        for key in keys:
            self.by_keys.drop(key)
        for name in ("id", "old_id"):
            if isinstance(change.get(name), str):
                self.by_ids.drop(change[name])
        self.changed(keys)

    def clear(self) -> None:
        self.by_keys.clear()
        self.by_ids.clear()
        self.changed(None)

    def cached(self, lookup: Lookup, name: str) -> tuple[App, ...] | None:
        return (self.by_keys if lookup == "key" else self.by_ids).cached(name)

    # -- lookups --------------------------------------------------------------------------
    async def by_key(self, key: str) -> App | None:
        return await self.by_keys.lookup(key, lambda name: self._fetch("key", name))

    async def by_id(self, app_id: str) -> App | None:
        return await self.by_ids.lookup(app_id, lambda name: self._fetch("id", name))

    async def _fetch(self, column: str, value: str) -> App | None:
        row = await self._read("fetchrow", f"WHERE {column} = $1", value)
        return None if row is None else self._app(row)

    async def socketio_apps(self, keys: frozenset[str] | None = None) -> list[App]:
        """Rows whose options name ``hosts`` or a ``socketioPath``, oldest first, at most
        ``max_socketio_apps`` (the rest logged); with ``keys``, those rows of these keys."""
        self.stats.listings += 1
        if keys is not None:
            rows = await self._read("fetch", "WHERE key = ANY($1::text[])", list(keys))
        else:
            most = self.settings.max_socketio_apps
            rows = await self._read(
                "fetch", "WHERE options ?| array['hosts', 'socketioPath'] "
                "ORDER BY created_at, id LIMIT $1", most + 1)
            if len(rows) > most:
                log.error("apps: more than %d apps of %s own Socket.IO endpoints "
                          "(appManager.maxSocketioApps): only the first %d are served",
                          most, self.table, most)
                rows = rows[:most]
        return [app for row in rows if (app := self._app(row)) is not None
                and app.serves_socketio]

    async def _read(self, method: str, where: str, value: Any) -> Any:
        import asyncpg

        try:
            pool = await self._connection_pool()
            return await getattr(pool, method)(
                f"SELECT {', '.join(COLUMNS)}, options FROM {self._table_sql} {where}", value,
                timeout=self.settings.connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as error:
            raise AppsUnavailable(f"the apps table {self.table} cannot be read: "
                                  f"{type(error).__name__}: {error}") from None

    def _app(self, row: Mapping[str, Any]) -> App | None:
        """A row as an App; a row the model refuses is logged and treated as unknown (its
        next change is read again)."""
        entry = _options(row["options"])
        entry.update({"appId": row["id"], "key": row["key"], "secret": row["secret"],
                      "enabled": row["enabled"]})
        if row["name"]:
            entry["name"] = row["name"]
        try:
            return parse_app(entry, f"{self.table}[{row['id']}]")
        except AppConfigError as error:
            log.error("apps: %s", error)
            return None

    # -- administration (the apps:* commands) ---------------------------------------------
    async def migrate(self) -> None:
        pool = await self._connection_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(schema(self.table))

    async def all(self) -> list[App]:
        pool = await self._connection_pool()
        rows = await pool.fetch(f"SELECT {', '.join(COLUMNS)}, options FROM {self._table_sql} "
                                "ORDER BY created_at, id")
        return [app for row in rows if (app := self._app(row)) is not None]

    async def add(self, entry: Mapping[str, Any]) -> App:
        import asyncpg

        app = parse_app(dict(entry), "app")
        options = {name: value for name, value in entry.items()
                   if name not in ("appId", "id", "key", "secret", "name", "enabled")}
        pool = await self._connection_pool()
        try:
            await pool.execute(
                f"INSERT INTO {self._table_sql} (id, key, secret, name, enabled, options) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb)", app.id, app.key, app.secret,
                entry.get("name"), app.enabled, json.dumps(options))
        except asyncpg.UniqueViolationError:
            raise AppStoreError(f"an app with the id {app.id!r} or the key {app.key!r} is "
                                f"in {self.table} already") from None
        except asyncpg.UndefinedTableError:
            raise AppStoreError(f"no table {self.table}: run `echo-server apps:migrate` "
                                "first") from None
        return app

    async def remove(self, app_id: str) -> bool:
        pool = await self._connection_pool()
        done = await pool.execute(f"DELETE FROM {self._table_sql} WHERE id = $1", app_id)
        return bool(done.endswith(" 1"))


def _options(value: Any) -> dict[str, Any]:
    """asyncpg hands jsonb over as text unless told otherwise."""
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {}
