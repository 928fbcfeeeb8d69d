"""Which store holds the apps: ``"appManager"`` in laravel-echo-server.json (Soketi's word),
``ECHO_APPS_DATABASE_URL`` over its URL. Without either, the file (and Reverb's ``.env``)::

    "appManager": {"driver": "postgres", "url": "postgres://echo@db/echo",
                   "table": "echo_apps", "cacheSize": 10000, "missesPerSecond": 50}

With PostgreSQL the file's apps still count, first: the default app's ``clients`` keep
working whatever holds the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from broadcaster.sources.postgres import quote_table
from echo_common.values import positive_number

from .cache import CacheSettings
from .file_store import FileStore
from .model import App, AppConfigError
from .postgres import PostgresSettings, PostgresStore
from .store import AppStore, ChainStore, StaticStore

DRIVERS = ("file", "postgres")
KNOWN = frozenset({"driver", "url", "table", "cacheSize", "negativeCacheSize", "cacheTtlMs",
                   "negativeCacheTtlMs", "missesPerSecond", "missBurst", "connectTimeoutMs",
                   "pingMs", "reconnectMinMs", "reconnectMaxMs", "poolSize",
                   "maxSocketioApps"})
ENV_URL = "ECHO_APPS_DATABASE_URL"
# Each default is written once, in the settings it fills (everything but the URL has one).
_DEFAULT = PostgresSettings(url="")
_CACHE = CacheSettings()


def _number(section: Mapping[str, Any], name: str, default: float, scale: float = 1.0,
            integer: bool = False) -> float:
    return positive_number(section, name, default, f"appManager.{name}", integer=integer,
                           scale=scale, error=AppConfigError)


def parse_app_manager(section: Any, environ: Mapping[str, str]) -> PostgresSettings | None:
    """None: the file's apps only. Else the PostgreSQL store's settings."""
    url = environ.get(ENV_URL) or None
    if section is None and url is None:
        return None
    if section is not None and not isinstance(section, dict):
        raise AppConfigError('`appManager` must be an object, e.g. {"driver": "postgres", '
                             '"url": "postgres://..."}')
    section = section or {}
    unknown = sorted(set(section) - KNOWN)
    if unknown:
        raise AppConfigError(f"appManager: unknown key(s) {unknown}; known: {sorted(KNOWN)}")
    driver = "postgres" if url else section.get("driver", "file")
    if driver not in DRIVERS:
        raise AppConfigError(f"appManager.driver must be one of {list(DRIVERS)}, not "
                             f"{driver!r}")
    if driver == "file":
        return None
    url = url or section.get("url")
    if not isinstance(url, str) or not url.startswith(("postgres://", "postgresql://")):
        raise AppConfigError(f"appManager.url (or {ENV_URL}) must be a postgres:// URL for "
                             "the postgres driver")
    table = section.get("table", _DEFAULT.table)
    try:
        quote_table(table if isinstance(table, str) else "")
    except ValueError:
        raise AppConfigError(f"appManager.table must be a plain [schema.]table name, not "
                             f"{table!r}") from None
    return PostgresSettings(
        url=url, table=table,
        cache=CacheSettings(
            size=int(_number(section, "cacheSize", _CACHE.size, integer=True)),
            negative_size=int(_number(section, "negativeCacheSize", _CACHE.negative_size,
                                        integer=True)),
            ttl=_number(section, "cacheTtlMs", _CACHE.ttl * 1000, 0.001),
            negative_ttl=_number(section, "negativeCacheTtlMs", _CACHE.negative_ttl * 1000, 0.001),
            misses_per_second=_number(section, "missesPerSecond", _CACHE.misses_per_second),
            miss_burst=_number(section, "missBurst", _CACHE.miss_burst)),
        connect_timeout=_number(section, "connectTimeoutMs", _DEFAULT.connect_timeout * 1000,
                                0.001),
        ping=_number(section, "pingMs", _DEFAULT.ping * 1000, 0.001),
        reconnect_min=_number(section, "reconnectMinMs", _DEFAULT.reconnect_min * 1000, 0.001),
        reconnect_max=_number(section, "reconnectMaxMs", _DEFAULT.reconnect_max * 1000, 0.001),
        pool_size=int(_number(section, "poolSize", _DEFAULT.pool_size, integer=True)),
        max_socketio_apps=int(_number(section, "maxSocketioApps", _DEFAULT.max_socketio_apps,
                                      integer=True)))


def serving_store(file_apps: Iterable[App] | StaticStore,
                  database: PostgresSettings | None) -> AppStore:
    """What the server looks apps up in: the file's (a reload replaces them in place), then
    the database's."""
    static = file_apps if isinstance(file_apps, StaticStore) else StaticStore(file_apps)
    return static if database is None else ChainStore(static, PostgresStore(database))


def editing_store(config_file: str, environ: Mapping[str, str],
                  database: PostgresSettings | None) -> FileStore | PostgresStore:
    """What ``apps:add`` and ``apps:remove`` change: the database when there is one."""
    return FileStore(config_file, environ) if database is None else PostgresStore(database)
