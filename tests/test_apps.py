"""The apps room: the typed App and its validation (the same errors as the parsers it
replaced), signing, the file store and its edits, Reverb's `.env`, and the PostgreSQL store
against a real PostgreSQL: changes seen live through NOTIFY, a flood of unknown keys kept
from the database, a bounded cache, a reconnect after the listening connection is killed,
and the `apps:*` commands as real processes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from echo_common.signing import same_secret, sign, verify
from echo_server.apps.cache import CacheSettings, CacheStats, LookupCache, Lru, MissBudget
from echo_server.apps.file_store import FileStore, file_apps
from echo_server.apps.manager import parse_app_manager, serving_store
from echo_server.apps.model import AppConfigError, parse_app, parse_apps
from echo_server.apps.postgres import APPLICATION_NAME, PostgresSettings, PostgresStore
from echo_server.apps.store import AppStoreError, AppsUnavailable
from echo_server.apps.tags import app_tag
from echo_server.config import ConfigError, load_config
from echo_server.webhooks.settings import endpoints
from tests.support.waits import wait_until
from tests.test_cli import run_cli

SECRET = "s3cret"


def write_config(directory: Path, options: dict[str, Any], indent: str | int = 4) -> Path:
    path = directory / "laravel-echo-server.json"
    path.write_text(json.dumps(options, indent=indent) + "\n")
    return path


def config_error(tmp_path: Path, options: dict[str, Any]) -> str:
    write_config(tmp_path, options)
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=str(tmp_path), environ={})
    return str(caught.value).split(": ", 1)[1]


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize(("client", "message"), [
    ({"appId": "a"}, "`clients[0]` needs an `appId` and a `key` (a non-empty string); an API "
     "client without a key can never be used: add its key (`echo-server client:add <appId>` "
     "makes one), or remove the entry"),
    ("not an object", "`clients[0]` needs an `appId` and a `key`"),
    ({"appId": "a", "key": "k", "secret": ""}, "`clients[0].secret` must be a non-empty string"),
    ({"appId": "a", "key": "k", "apiKey": 5}, "`clients[0].apiKey` must be a non-empty string"),
    ({"appId": "a", "key": "k", "secret": SECRET, "maxConnections": "lots"},
     "clients[k].maxConnections must be a positive integer"),
    ({"appId": "a", "key": "k", "secret": SECRET, "allowedOrigins": "https://x"},
     "clients[k].allowedOrigins must be a list of origins"),
    ({"appId": "a", "key": "k", "secret": SECRET, "activityTimeoutMs": -1},
     "clients[k].activityTimeoutMs must be milliseconds"),
    ({"appId": "a", "key": "k", "webhooks": []},
     "clients[0] has webhooks but no `secret` to sign them with (Pusher's app secret)"),
    ({"appId": "a", "key": "k", "secret": SECRET, "webhooks": {}},
     "clients[0].webhooks must be a list"),
    ({"appId": "a", "key": "k", "secret": SECRET, "webhooks": [{"url": "ftp://x"}]},
     "clients[0].webhooks[0].url must be an http(s) URL, not 'ftp://x'"),
    ({"appId": "a", "key": "k", "secret": SECRET,
      "webhooks": [{"url": "http://x", "event_types": ["nope"]}]},
     "clients[0].webhooks[0].event_types must be a list of"),
    ({"appId": "a", "key": "k", "secret": SECRET,
      "webhooks": [{"url": "http://x", "headers": {"a": "b\r\nc"}}]},
     "clients[0].webhooks[0].headers must be an object of at most 32 string values"),
])
def test_a_bad_clients_entry_gets_the_error_it_always_got(tmp_path: Path, client: Any,
                                                          message: str) -> None:
    assert config_error(tmp_path, {"clients": [client]}).startswith(message)


def test_a_clients_entry_without_a_secret_keeps_its_pusher_options_unread() -> None:
    """As before: only a Pusher app's options were checked."""
    app = parse_app({"appId": 1, "key": "k", "maxConnections": "lots"}, "clients[0]",
                    legacy=True)
    assert (app.id, app.key, app.secret, app.signs) == ("1", "k", "", False)
    assert app.limits.max_connections == 0


def test_an_apps_entry_carries_every_option_typed() -> None:
    app = parse_app({
        "appId": "42", "key": "k", "secret": SECRET, "name": "Staging", "enabled": False,
        "enableClientMessages": False, "maxConnections": 100, "maxChannelsPerConnection": 50,
        "maxPresenceMembersPerChannel": 100, "maxPresenceMemberSizeInKb": 2,
        "maxEventPayloadInKb": 10, "maxEventBatchSize": 10, "maxEventChannelsAtOnce": 100,
        "maxEventNameLength": 200, "maxBackendEventsPerSecond": -1,
        "maxClientEventsPerSecond": 10, "maxReadRequestsPerSecond": 2.5,
        "allowedOrigins": ["https://app.test/"], "activityTimeoutMs": 7000,
        "webhooks": [{"url": "https://hooks.test/in", "event_types": ["member_added"]}],
        "channels": {"private-orders.{id}": {"require": {"sub": "{id}"}}},
    }, "apps[0]")
    assert (app.id, app.name, app.enabled, app.signs) == ("42", "Staging", False, True)
    limits = app.limits
    assert (limits.client_events, limits.max_connections, limits.max_channels_per_connection,
            limits.max_presence_members, limits.max_presence_member_bytes,
            limits.max_event_bytes, limits.max_batch_size, limits.max_event_channels,
            limits.max_event_name_length) == (False, 100, 50, 100, 2048, 10240, 10, 100, 200)
    assert (app.rates.backend_events, app.rates.client_events, app.rates.api_reads) == (
        0.0, 10.0, 2.5)
    assert app.allowed_origins == ("https://app.test",) and app.activity_timeout == 7.0
    assert app.origin_allowed("https://app.test") and not app.origin_allowed("https://evil")
    assert [rule.pattern for rule in app.channel_rules] == ["private-orders.{id}"]
    [endpoint] = endpoints([app])
    assert (endpoint.app_id, endpoint.key, endpoint.secret, endpoint.url) == (
        "42", "k", SECRET, "https://hooks.test/in")
    # It hears its own app's channels (as the core holds them: tagged; the dispatcher hands
    # an event to the endpoints of its channel's tag) and no other's.
    assert app.tag == "\x1f42" and endpoint.tag == app.tag
    assert endpoint.tag == app_tag("presence-x\x1f42")
    assert endpoint.wants("member_added", "presence-x") and not endpoint.wants(
        "member_removed", "presence-x")
    assert endpoint.tag != app_tag("presence-x")
    assert endpoint.tag != app_tag("presence-x\x1f43")


@pytest.mark.parametrize(("entry", "message"), [
    ({"appId": "1", "key": "k"}, "`apps[0]` needs a `secret`"),
    ({"appId": "1", "key": "k", "secret": SECRET, "maxConection": 5},
     "`apps[0]`: unknown key(s) ['maxConection']"),
    ({"appId": "1", "key": "k", "secret": SECRET, "maxConnections": -5},
     "apps[0].maxConnections must be a positive integer"),
    ({"appId": "1", "key": "k", "secret": SECRET, "maxClientEventsPerSecond": "many"},
     "apps[0].maxClientEventsPerSecond must be a number per second"),
    ({"appId": "1", "key": "k", "secret": SECRET, "enabled": "yes"},
     "`apps[0].enabled` must be true or false"),
    ({"appId": "1", "key": "k", "secret": SECRET, "channels": {"private-x": 5}},
     "apps[0].channels['private-x'] must be an object"),
    ({"appId": {"no": 1}, "key": "k", "secret": SECRET}, "`apps[0]` needs an `appId`"),
])
def test_an_apps_entry_is_checked_strictly(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(AppConfigError) as caught:
        parse_apps([entry], "apps")
    assert str(caught.value).startswith(message)


def test_apps_and_clients_share_no_key_or_id(tmp_path: Path) -> None:
    client = {"appId": "1", "key": "k", "secret": SECRET}
    assert config_error(tmp_path, {"clients": [client], "apps": [
        {"appId": "2", "key": "k", "secret": SECRET}]}) == "two apps have the key 'k'"
    assert config_error(tmp_path, {"apps": [
        {"appId": "2", "key": "a", "secret": SECRET},
        {"appId": "2", "key": "b", "secret": SECRET}]}) == "two apps have the id '2'"


def test_the_config_reads_apps_next_to_clients(tmp_path: Path) -> None:
    write_config(tmp_path, {
        "clients": [{"appId": "api", "key": "api-key"}],
        "apps": [{"appId": "7", "key": "seven", "secret": SECRET, "maxConnections": 3}]})
    config = load_config(cwd=str(tmp_path), environ={})
    assert [(a.id, a.key, a.signs) for a in config.apps] == [
        ("api", "api-key", False), ("7", "seven", True)]
    # Served, each with its own channels: no notice any more.
    assert config.webhook_endpoints == []
    assert not any("`apps`" in w for w in config.warnings)


def test_an_isolated_app_may_not_take_a_metrics_label_as_its_id(tmp_path: Path) -> None:
    """/metrics labels the default app `default` and the apps past its labelled ones
    `other`: neither may be an isolated app's id (the file refuses it, `apps:add` too); a
    `clients` entry is the default app's own, whatever its id."""
    for reserved in ("default", "other"):
        assert config_error(tmp_path, {"apps": [
            {"appId": reserved, "key": "k", "secret": SECRET}]}).startswith(
            f"`apps[0].appId` '{reserved}' is reserved")
        write_config(tmp_path, {"clients": [{"appId": "default", "key": "k", "secret": SECRET}]})
        assert [app.id for app in load_config(cwd=str(tmp_path), environ={}).apps] == [
            "default"]
        added = run_cli("apps:add", "--id", reserved, cwd=tmp_path)
        assert added.returncode == 1 and f"'{reserved}' is reserved" in added.stderr
        assert "apps" not in json.loads((tmp_path / "laravel-echo-server.json").read_text())


def test_signing_is_pushers_and_safe_on_any_text() -> None:
    expected = hmac.new(b"secret", b"1234.5678:private-x", hashlib.sha256).hexdigest()
    assert sign("secret", "1234.5678:private-x") == expected == sign(b"secret",
                                                                     b"1234.5678:private-x")
    assert verify("secret", "1234.5678:private-x", expected)
    assert not verify("secret", "1234.5678:private-y", expected)
    # compare_digest raises TypeError on non-ASCII str; ours answers False.
    assert not same_secret("é\ud800", expected) and same_secret("é", "é")
    assert len(sign("sécret", "ch\ud800annel")) == 64


# --------------------------------------------------------------------------- file and .env


def test_reverb_env_is_an_app_as_before(tmp_path: Path) -> None:
    write_config(tmp_path, {"port": 6001, "clients": [{"appId": "api", "key": "api-key"}]})
    (tmp_path / ".env").write_text("REVERB_APP_ID=424242\nREVERB_APP_KEY=reverb-key\n"
                                   "REVERB_APP_SECRET=reverb-secret\nREVERB_SERVER_PORT=8080\n")
    config = load_config(cwd=str(tmp_path), environ={})
    reverb = config.reverb_app
    assert reverb is not None and (reverb.id, reverb.key, reverb.secret, reverb.tag) == (
        "424242", "reverb-key", "reverb-secret", "")
    assert config.reverb_listen == (None, 8080)
    assert [(a.id, a.key, a.secret) for a in config.apps] == [
        ("api", "api-key", ""), ("424242", "reverb-key", "reverb-secret")]
    assert [a.key for a in config.apps if a.signs] == ["reverb-key"]
    # A `clients` entry with Reverb's key wins; no second app.
    assert len(file_apps([{"appId": "x", "key": "reverb-key"}], None, config.environ)) == 1


async def test_the_file_store_edits_apps_atomically_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"clients": [{"appId": "api", "key": "api-key"}],
                                   "socketio": {"origins": "x.test:443"}}, indent="\t")
    path.chmod(0o640)
    store = FileStore(str(path), {})
    await store.start()
    app = await store.add({"appId": "9", "key": "nine", "secret": SECRET})
    assert (app.id, app.key) == ("9", "nine")
    text = path.read_text()
    assert "\n\t\"clients\"" in text  # the file's own indentation
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert json.loads(text) == {"clients": [{"appId": "api", "key": "api-key"}],
                                "socketio": {"origins": "x.test:443"},
                                "apps": [{"appId": "9", "key": "nine", "secret": SECRET}]}
    assert (await store.by_key("nine")) == app and (await store.by_id("api")) is not None
    with pytest.raises(AppStoreError, match="two apps have the key 'nine'"):
        await store.add({"appId": "10", "key": "nine", "secret": SECRET})
    with pytest.raises(AppConfigError, match="needs a `secret`"):
        await store.add({"appId": "10", "key": "ten"})
    assert len(json.loads(path.read_text())["apps"]) == 1  # nothing written by a refusal
    assert await store.remove("9") and not await store.remove("9")
    assert await store.by_key("nine") is None
    assert json.loads(path.read_text())["apps"] == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".apps-")] == []


def test_app_manager_settings() -> None:
    assert parse_app_manager(None, {}) is None
    assert parse_app_manager({"driver": "file"}, {}) is None
    settings = parse_app_manager({"driver": "postgres", "url": "postgres://h/db",
                                  "table": "tenants.apps", "cacheSize": 5,
                                  "missesPerSecond": 2}, {})
    assert settings is not None and (settings.url, settings.table, settings.cache.size,
                                     settings.cache.misses_per_second) == (
        "postgres://h/db", "tenants.apps", 5, 2)
    from_env = parse_app_manager(None, {"ECHO_APPS_DATABASE_URL": "postgresql://e/db"})
    assert from_env is not None and from_env.url == "postgresql://e/db"
    for section, message in (({"driver": "mysql"}, "appManager.driver must be one of"),
                             ({"driver": "postgres"}, "appManager.url"),
                             ({"driver": "postgres", "url": "postgres://h/d", "table": "a;b"},
                              "appManager.table must be a plain"),
                             ({"driver": "postgres", "url": "postgres://h/d", "cacheSize": 0},
                              "appManager.cacheSize must be a positive integer"),
                             ({"drvier": "postgres"}, "appManager: unknown key(s)")):
        with pytest.raises(AppConfigError, match=re.escape(message)):
            parse_app_manager(section, {})


# --------------------------------------------------------------------------- PostgreSQL


FAST = {"connect_timeout": 2.0, "ping": 0.5, "reconnect_min": 0.05, "reconnect_max": 0.2}


@pytest.fixture
def table() -> str:
    return f"apps_{secrets.token_hex(4)}"


@pytest.fixture
async def database(postgres_url: str, table: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to write rows as an operator would; the table made by the store's
    migration, dropped afterwards."""
    migrator = PostgresStore(PostgresSettings(postgres_url, table))
    await migrator.migrate()
    await migrator.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await drop(conn, table)
        await conn.close()


async def drop(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    await conn.execute(f'DROP FUNCTION IF EXISTS "{table}_notify"()')


Started = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def started(postgres_url: str, table: str) -> AsyncIterator[Started]:
    """Running stores on the test's table (cache settings as keywords), closed afterwards."""
    stores: list[PostgresStore] = []

    async def start(**cache: Any) -> PostgresStore:
        store = PostgresStore(PostgresSettings(postgres_url, table,
                                               cache=CacheSettings(**cache), **FAST))
        stores.append(store)
        await store.start()
        assert store.listening.is_set()
        return store

    yield start
    for store in stores:
        await store.close()


async def insert(conn: asyncpg.Connection, table: str, app_id: str, key: str,
                 secret: str = SECRET, options: dict[str, Any] | None = None) -> None:
    await conn.execute(f'INSERT INTO "{table}" (id, key, secret, options) '
                       "VALUES ($1, $2, $3, $4::jsonb)", app_id, key, secret,
                       json.dumps(options or {}))


async def eventually(store: PostgresStore, key: str, check: Any, within: float = 1.0) -> None:
    """A change must show through the running store within a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await store.by_key(key)
        if check(found):
            return
        assert loop.time() < deadline, f"{key}: still {found!r} after {within} s"
        await asyncio.sleep(0.01)


async def test_added_rotated_disabled_and_removed_apps_show_within_a_second(
        started: Started, table: str, database: asyncpg.Connection) -> None:
    store = await started()
    assert await store.by_key("live") is None  # remembered as unknown...
    await insert(database, table, "100", "live", options={"maxConnections": 3})
    await eventually(store, "live", lambda a: a is not None)  # ...until NOTIFY drops it
    app = await store.by_key("live")
    assert app is not None and app.limits.max_connections == 3 and app.enabled
    assert (await store.by_id("100")) == app
    await database.execute(f'UPDATE "{table}" SET secret = $1 WHERE id = $2', "rotated",
                           "100")
    await eventually(store, "live", lambda a: a is not None and a.secret == "rotated")
    assert (await store.by_id("100")).secret == "rotated"  # type: ignore[union-attr]
    await database.execute(f'UPDATE "{table}" SET enabled = false WHERE id = $1', "100")
    await eventually(store, "live", lambda a: a is not None and not a.enabled)
    await database.execute(f'UPDATE "{table}" SET key = $1 WHERE id = $2', "moved", "100")
    await eventually(store, "live", lambda a: a is None)
    await eventually(store, "moved", lambda a: a is not None and a.id == "100")
    await database.execute(f'DELETE FROM "{table}" WHERE id = $1', "100")
    await eventually(store, "moved", lambda a: a is None)
    assert await store.by_id("100") is None
    await insert(database, table, "101", "again")
    assert await store.by_key("again") is not None
    await database.execute(f'TRUNCATE "{table}"')
    await eventually(store, "again", lambda a: a is None)


async def test_a_flood_of_unknown_keys_reaches_the_database_a_bounded_number_of_times(
        started: Started, table: str, database: asyncpg.Connection) -> None:
    await insert(database, table, "1", "known")
    store = await started(misses_per_second=10, miss_burst=20)
    assert (await store.by_key("known")) is not None  # a client of a real app came first
    # One unknown key asked 1,000 times at once and after: one query (single flight,
    # then the negative entry).
    answers = await asyncio.gather(*(store.by_key("nobody") for _ in range(1000)))
    answers += [await store.by_key("nobody") for _ in range(1000)]
    assert answers == [None] * 2000 and store.stats.queries == 2
    # 1,000 different random keys: the budget, not the attacker, decides the queries.
    refused, began = 0, time.monotonic()
    for _ in range(1000):
        try:
            assert await store.by_key(secrets.token_hex(10)) is None
        except AppsUnavailable:
            refused += 1
    # The burst, and what the rate refilled meanwhile.
    assert store.stats.queries <= 2 + 20 + 10 * (time.monotonic() - began) + 1
    assert refused >= 950 and store.stats.over_budget == refused
    # The real app, remembered, answers whatever the flood, without a query.
    queries = store.stats.queries
    assert (await store.by_key("known")) is not None and store.stats.queries == queries


async def test_a_key_known_unknown_is_answered_from_memory(
        postgres_url: str, table: str, database: asyncpg.Connection) -> None:
    """What a connect or an API request asks first (``cached``, through the file's apps
    and then the database's): a key remembered as unknown is refused at once, not after a
    task that awaits the lookup."""
    file_apps_ = parse_apps([{"appId": "api", "key": "file-key", "secret": SECRET}], "apps")
    store = serving_store(file_apps_, PostgresSettings(postgres_url, table, **FAST))
    await store.start()
    try:
        [database_store] = [part for part in store.parts() if isinstance(part, PostgresStore)]
        assert store.cached("key", "nobody") is None  # only the database can tell
        assert await store.by_key("nobody") is None and await store.by_id("nobody") is None
        assert store.cached("key", "nobody") == () and store.cached("id", "nobody") == ()
        assert database_store.stats.queries == 2 and database_store.stats.negative_hits == 2
    finally:
        await store.close()


async def test_the_cache_is_bounded(started: Started, table: str,
                                    database: asyncpg.Connection) -> None:
    for number in range(30):
        await insert(database, table, str(number), f"key-{number}")
    store = await started(size=5, negative_size=7)
    for number in range(30):
        assert (await store.by_key(f"key-{number}")).id == str(number)  # type: ignore
    for number in range(30):
        assert await store.by_key(f"missing-{number}") is None
    assert len(store.by_keys.found) == 5 and len(store.by_keys.unknown) == 7
    queries = store.stats.queries
    assert (await store.by_key("key-29")) is not None  # the most recent stayed
    assert store.stats.queries == queries


async def test_one_lookup_of_a_key_serves_everyone_asking_at_once(
        started: Started, table: str, database: asyncpg.Connection) -> None:
    await insert(database, table, "5", "popular")
    store = await started()
    apps = await asyncio.gather(*(store.by_key("popular") for _ in range(200)))
    assert {app.id for app in apps if app is not None} == {"5"}
    assert store.stats.queries == 1 and store.stats.shared == 199


async def test_the_store_reconnects_and_forgets_what_it_may_have_missed(
        started: Started, table: str, database: asyncpg.Connection) -> None:
    await insert(database, table, "7", "seven")
    store = await started()
    assert (await store.by_key("seven")).secret == SECRET  # type: ignore[union-attr]
    # A change whose NOTIFY is never sent: only the reconnect's invalidation shows it.
    await database.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
    await database.execute(f'UPDATE "{table}" SET secret = $1 WHERE id = $2', "silent",
                           "7")
    await database.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
    assert (await store.by_key("seven")).secret == SECRET  # type: ignore[union-attr]
    killed = await database.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1", APPLICATION_NAME)
    assert killed >= 1
    await wait_until(lambda: store.reconnects >= 1 and store.listening.is_set(),
                     "the store listens again", timeout=5)
    assert (await store.by_key("seven")).secret == "silent"  # type: ignore[union-attr]
    # And it hears changes again.
    await database.execute(f'UPDATE "{table}" SET enabled = false WHERE id = $1', "7")
    await eventually(store, "seven", lambda a: a is not None and not a.enabled)


async def test_a_change_during_a_lookup_is_not_overwritten_by_its_answer() -> None:
    """A NOTIFY that arrives while a query runs may be about a row the query read before the
    change: that answer serves its askers but is not remembered."""
    cache = LookupCache(CacheSettings(), MissBudget(100, 100), CacheStats())
    release = asyncio.Event()
    old = parse_app({"appId": "1", "key": "k", "secret": "old"}, "apps[0]")

    async def slow_fetch(_key: str) -> Any:
        await release.wait()
        return old

    lookup = asyncio.ensure_future(cache.lookup("k", slow_fetch))
    await wait_until(lambda: cache.stats.queries == 1, "the query runs")
    cache.drop("k")
    release.set()
    assert await lookup == old and cache.found.get("k") is None


async def test_a_lookup_after_a_change_does_not_join_a_query_begun_before_it() -> None:
    """The NOTIFY's own watchers look the app up again at once: joining the query still
    running from before the change, they got the old row (an app disabled while a page was
    connected stayed open: the Pusher endpoint saw it enabled). A lookup asked after the
    change runs a query of its own."""
    cache = LookupCache(CacheSettings(), MissBudget(100, 100), CacheStats())
    release = asyncio.Event()
    old = parse_app({"appId": "1", "key": "k", "secret": "s"}, "apps[0]")
    new = parse_app({"appId": "1", "key": "k", "secret": "s", "enabled": False}, "apps[0]")
    rows = [old, new]

    async def slow_fetch(_key: str) -> Any:
        row = rows.pop(0)
        if row is old:
            await release.wait()
        return row

    before = asyncio.ensure_future(cache.lookup("k", slow_fetch))
    await wait_until(lambda: cache.stats.queries == 1, "the first query runs")
    cache.drop("k")  # the NOTIFY: the row changed
    assert await asyncio.wait_for(cache.lookup("k", slow_fetch), 2) is new
    release.set()
    assert await before is old
    assert cache.found.get("k") is new  # the later answer stays, the earlier is not kept


def test_entries_expire_and_the_least_recently_used_goes_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("echo_server.apps.cache.time.monotonic", lambda: now[0])
    lru: Lru[str] = Lru(2, ttl=10)
    lru.put("a", "A")
    lru.put("b", "B")
    assert lru.get("a") == "A"  # now the most recent
    lru.put("c", "C")
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == ("A", None, "C")
    now[0] += 11
    assert lru.get("a") is None and len(lru) == 1
    budget = MissBudget(rate=2, burst=3)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 1  # two more
    assert [budget.take() for _ in range(3)] == [True, True, False]


async def test_the_files_apps_answer_first_then_the_databases(
        postgres_url: str, table: str, database: asyncpg.Connection) -> None:
    await insert(database, table, "20", "from-db")
    await insert(database, table, "21", "shadowed", secret="db-secret")
    file_apps_ = parse_apps([{"appId": "api", "key": "shadowed", "secret": "file-secret"}],
                            "clients", legacy=True)
    store = serving_store(file_apps_, PostgresSettings(postgres_url, table, **FAST))
    await store.start()
    try:
        assert (await store.by_key("shadowed")).secret == "file-secret"  # type: ignore
        assert (await store.by_key("from-db")).id == "20"  # type: ignore[union-attr]
        assert (await store.by_id("api")) is not None and await store.by_key("none") is None
        assert [app.id for app in await store.all()] == ["api", "20", "21"]
        with pytest.raises(AppStoreError, match="is app 'api'"):
            await store.add({"appId": "22", "key": "shadowed", "secret": SECRET})
    finally:
        await store.close()


async def test_a_row_the_model_refuses_is_an_unknown_app(
        started: Started, table: str, database: asyncpg.Connection) -> None:
    await insert(database, table, "8", "broken", options={"maxConnections": "lots"})
    await insert(database, table, "other", "labelled")  # /metrics' label of the rest
    store = await started()
    assert await store.by_key("broken") is None
    assert await store.by_key("labelled") is None
    await database.execute(f"UPDATE \"{table}\" SET options = '{{}}' WHERE id = '8'")
    await eventually(store, "broken", lambda a: a is not None)


async def test_a_database_that_is_away_is_unavailable_not_unknown(table: str) -> None:
    from tests.conftest import free_port

    store = PostgresStore(PostgresSettings(f"postgres://postgres@127.0.0.1:{free_port()}/x",
                                           table, connect_timeout=0.5, ping=0.5,
                                           reconnect_min=0.05, reconnect_max=0.1))
    await store.start()
    try:
        assert not store.listening.is_set()
        with pytest.raises(AppsUnavailable, match="cannot be read"):
            await store.by_key("anything")
        assert len(store.by_keys.unknown) == 0  # not remembered as unknown
    finally:
        await store.close()


# --------------------------------------------------------------------------- the commands


def test_apps_commands_on_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"clients": [{"appId": "api", "key": "api-key"}]})
    added = run_cli("apps:add", "--name", "Staging", "--options",
                    '{"maxConnections": 10}', cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    shown = dict(line.split(": ", 1) for line in added.stdout.splitlines() if ": " in line)
    assert shown["appId"].isdigit() and len(shown["key"]) == 20 and len(shown["secret"]) == 40
    [entry] = json.loads(path.read_text())["apps"]
    assert entry == {"maxConnections": 10, "appId": shown["appId"], "key": shown["key"],
                     "secret": shown["secret"], "name": "Staging"}
    listed = run_cli("apps:list", cwd=tmp_path)
    assert listed.returncode == 0 and shown["key"] in listed.stdout and "Staging" in listed.stdout
    assert shown["secret"] not in listed.stdout and "api-key" in listed.stdout
    bad = run_cli("apps:add", "--key", shown["key"], cwd=tmp_path)
    assert bad.returncode == 1 and f"the key '{shown['key']}'" in bad.stderr
    assert run_cli("apps:migrate", cwd=tmp_path).returncode == 1
    removed = run_cli("apps:remove", shown["appId"], cwd=tmp_path)
    assert removed.returncode == 0 and json.loads(path.read_text())["apps"] == []
    again = run_cli("apps:remove", shown["appId"], cwd=tmp_path)
    assert again.returncode == 1 and "no app" in again.stderr


def test_apps_commands_on_postgres(tmp_path: Path, postgres_url: str, table: str) -> None:
    write_config(tmp_path, {"appManager": {"driver": "postgres", "table": table}})
    env = {"ECHO_APPS_DATABASE_URL": postgres_url}
    try:
        before = run_cli("apps:list", cwd=tmp_path, env=env)
        assert before.returncode == 1 and "apps:migrate" in before.stderr
        migrated = run_cli("apps:migrate", cwd=tmp_path, env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert run_cli("apps:migrate", cwd=tmp_path, env=env).returncode == 0  # idempotent
        added = run_cli("apps:add", "--id", "555", "--key", "pg-key", "--disabled",
                        cwd=tmp_path, env=env)
        assert added.returncode == 0, added.stderr
        assert "appId: 555" in added.stdout and "secret: " in added.stdout
        listed = run_cli("apps:list", "--json", cwd=tmp_path, env=env)
        assert json.loads(listed.stdout) == [
            {"appId": "555", "key": "pg-key", "name": "555", "enabled": False}]
        duplicate = run_cli("apps:add", "--id", "555", cwd=tmp_path, env=env)
        assert duplicate.returncode == 1 and "already" in duplicate.stderr
        assert run_cli("apps:remove", "555", cwd=tmp_path, env=env).returncode == 0
        assert json.loads(run_cli("apps:list", "--json", cwd=tmp_path, env=env).stdout) == []
    finally:
        async def cleanup() -> None:
            conn = await asyncpg.connect(postgres_url)
            await drop(conn, table)
            await conn.close()

        asyncio.run(cleanup())

