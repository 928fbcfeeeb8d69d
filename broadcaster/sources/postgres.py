"""PostgreSQL LISTEN/NOTIFY, for apps that have PostgreSQL and no Redis.

A notification channel is not an Echo channel (``private-admin-dashboard.5`` is not a usable
LISTEN name, and one LISTEN per Echo channel would not scale), so the server LISTENs on a few
named channels (``?listen=echo_events``, comma-separated for several) and every payload names
its Echo channels: Laravel's message plus the list,
``{"channels": [...], "event": "...", "data": {...}, "socket": null}``.

PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (in its default build). A larger event
is stored as a row in a configured table (``?table=echo_events_payloads``) and the notification
only names it, ``{"table": "echo_events_payloads", "id": 42}``; the source then reads the
row's ``payload`` column. Only the configured table is ever read. The publisher creates it when
first needed (``id bigserial``, ``payload json``, ``created_at``) and never deletes rows: every
instance must be able to read them, so pruning is the operator's
(``DELETE FROM echo_events_payloads WHERE created_at < now() - interval '1 hour'``).

NOTIFY is fire-and-forget: what is sent while the server is disconnected is not replayed (use
``redis-stream://`` for that). The URL is asyncpg's (``postgres://user:password@host:port/db``,
``?sslmode=...``), plus ``listen``, ``table``, ``ping`` (seconds between liveness checks of an
idle connection, default 15) and ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from echo_common.jsoncodec import loads

from ..event import BadMessage, BroadcastEvent, encode_routed_message, parse_routed_message
from ..phpjson import php_json_encode
from .base import EventSource, Publisher, option_float, split_options

DEFAULT_CHANNEL = "echo_events"
NOTIFY_LIMIT = 8000  # bytes; PostgreSQL wants a payload shorter than this
OPTIONS = ("listen", "table", "ping", "connect_timeout")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def quote_table(name: str) -> str:
    """``schema.table`` or ``table``, quoted; anything else is refused, as it ends up in SQL."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise ValueError(f"table {name!r} is not a plain [schema.]table name")
    return ".".join(f'"{p}"' for p in parts)


def _require_asyncpg() -> None:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise ValueError("postgres:// needs asyncpg: pip install 'echo-server[postgres]'") from None


def _listen_channels(options: Mapping[str, str]) -> list[str]:
    names = [n.strip() for n in (options.get("listen") or DEFAULT_CHANNEL).split(",")]
    names = [n for n in names if n]
    if not names:
        raise ValueError("listen= names no channel")
    for name in names:
        if len(name.encode()) > 63:
            raise ValueError(f"notification channel {name!r} is longer than 63 bytes")
    return names


class PostgresSource(EventSource):
    kind = "postgres"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url)
        _require_asyncpg()
        self._dsn, url_options = split_options(url, OPTIONS)
        self.channels = _listen_channels(url_options)
        self.table = url_options.get("table") or None
        self._table_sql = quote_table(self.table) if self.table else None
        self.ping = option_float(url_options, "ping", 15.0) or 15.0
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self._conn: Any = None
        self._queue: list[str] = []
        self._ready = asyncio.Event()
        self._lost: BaseException | None = None

    async def connect(self) -> None:
        import asyncpg

        await self.close()
        self._queue, self._lost = [], None
        conn = await asyncpg.connect(self._dsn, timeout=self.connect_timeout)
        conn.add_termination_listener(self._terminated)
        self._conn = conn

    async def subscribe(self) -> None:
        conn = self._require()
        for channel in self.channels:
            await conn.add_listener(channel, self._notified)  # LISTEN "channel"

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._queue.append(payload)
        self._ready.set()

    def _terminated(self, _conn: Any) -> None:
        self._lost = ConnectionError("PostgreSQL closed the connection")
        self._ready.set()

    def _require(self) -> Any:
        if self._conn is None:
            raise ConnectionError("not connected")
        return self._conn

    async def next_batch(self) -> list[BroadcastEvent]:
        conn = self._require()
        while not self._queue:
            if self._lost is not None:
                raise self._lost
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), self.ping)
            except TimeoutError:
                # An idle LISTEN connection never reads; a link that died silently (no
                # FIN/RST) is only noticed by asking something.
                await conn.fetchval("SELECT 1", timeout=self.connect_timeout)
        payloads, self._queue = self._queue, []
        events: list[BroadcastEvent] = []
        for payload in payloads:
            events.extend(await self._decode(conn, payload))
        return events

    async def _decode(self, conn: Any, payload: str) -> list[BroadcastEvent]:
        try:
            message = loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            self.on_bad_message("bad_json", f"postgres notification: not JSON: {exc}")
            return []
        if isinstance(message, dict) and "table" in message and "channels" not in message:
            message = await self._fetch_row(conn, message)
            if message is None:
                return []
        try:
            return parse_routed_message(message)
        except BadMessage as exc:
            self.on_bad_message(exc.kind, f"postgres notification: {exc}")
            return []

    async def _fetch_row(self, conn: Any, ref: Mapping[str, Any]) -> Any:
        import asyncpg

        row_id = ref.get("id")
        if self._table_sql is None or ref.get("table") != self.table:
            self.on_bad_message("bad_message", f"postgres notification names table "
                                f"{ref.get('table')!r}, not the configured {self.table!r}")
            return None
        if isinstance(row_id, bool) or not isinstance(row_id, int | str):
            self.on_bad_message("bad_message", "postgres notification: 'id' must be a number "
                                "or a string")
            return None
        try:
            payload = await conn.fetchval(
                f"SELECT payload FROM {self._table_sql} WHERE id = $1", row_id,
                timeout=self.connect_timeout)
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            # The row's problem (wrong id type, missing table), not the connection's.
            self.on_bad_message("bad_message", f"postgres row {self.table}#{row_id}: {exc}")
            return None
        if payload is None:
            self.on_bad_message("bad_message", f"postgres row {self.table}#{row_id} is gone")
        return payload

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), 1.0)
        except Exception:
            with contextlib.suppress(Exception):
                conn.terminate()


class PostgresPublisher(Publisher):
    """``SELECT pg_notify(<listen>, <payload>)``; a payload of 8000 bytes or more becomes a row
    of ``?table=`` and the notification names it (both in one transaction, so the row is
    there when the notification arrives)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        _require_asyncpg()
        self._dsn, url_options = split_options(url, OPTIONS)
        self.channel = _listen_channels(url_options)[0]
        self.table = url_options.get("table") or None
        self._table_sql = quote_table(self.table) if self.table else None
        self.connect_timeout = option_float(url_options, "connect_timeout",
                                            options.get("connect_timeout", 5.0))
        self._pool: Any = None
        self._table_ready = False

    async def _connection_pool(self) -> Any:
        if self._pool is None:
            import asyncpg

            # A pool replaces a connection that broke (server restart) on the next publish.
            self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=4,
                                                   timeout=self.connect_timeout)
        return self._pool

    async def publish(self, channels: Sequence[str], event: str,
                      data: Mapping[str, Any] | None, socket: str | None) -> None:
        payload = encode_routed_message(channels, event, data, socket)
        pool = await self._connection_pool()
        async with pool.acquire() as conn:
            if len(payload.encode("utf-8")) < NOTIFY_LIMIT:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)
                return
            if self._table_sql is None:
                raise ValueError(
                    f"the event is {len(payload.encode())} bytes: PostgreSQL's NOTIFY takes "
                    f"less than {NOTIFY_LIMIT}; add ?table=<name> to the URL to send larger "
                    "events through a table")
            await self._ensure_table(conn)
            async with conn.transaction():
                row_id = await conn.fetchval(
                    f"INSERT INTO {self._table_sql} (payload) VALUES ($1) RETURNING id", payload)
                reference = php_json_encode({"table": self.table, "id": row_id})
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, reference)

    async def _ensure_table(self, conn: Any) -> None:
        if self._table_ready:
            return
        import asyncpg

        with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
            # Two publishers creating it at once: one of them loses, harmlessly.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table_sql} (id bigserial PRIMARY KEY, "
                "payload json NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        self._table_ready = True

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.wait_for(pool.close(), 5.0)
