"""Socket.IO for every isolated app: laravel-echo's socket.io pages belong to the app whose
endpoint they connect to (its own `socketioPath`, or its `hosts` on the default path), from
the file or a PostgreSQL table changed live; their channels are the app's own, they recover
their connection within their app only, and a flood of made-up host names and paths never
reaches the database. Real clients: laravel-echo on socket.io-client 2 and 4, the Python
`pusher` package publishing, a real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pusher
import pytest
import redis.asyncio as aioredis

from broadcaster import Broadcaster
from channel_auth import AuthRequest, AuthResult
from echo_server.adapters.socketio_apps import SocketIoApps
from echo_server.apps.endpoints import RESERVED_PATHS, overlaps
from echo_server.apps.model import App, AppConfigError, parse_apps
from echo_server.apps.postgres import PostgresStore
from echo_server.apps.store import StaticStore
from echo_server.process.server import EchoServer
from tests.conftest import (
    ProxyFactory,
    ServerFactory,
    database_server,
    laravel_message,
    recoveries,
    requires_node,
    server_url,
)
from tests.support.auth_backend import AuthBackend
from tests.support.http import http_client
from tests.support.raw import RawWebSocket, socketio_client
from tests.support.waits import ClientFactory, wait_until

A = {"appId": "3001", "key": "a-key", "secret": "a-secret", "socketioPath": "/a/socket.io"}
B = {"appId": "3002", "key": "b-key", "secret": "b-secret", "socketioPath": "/b/socket.io"}
CHANNEL = "leads-management"
RECOVERY = {"socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 10_000}}}


def _laravel(server: EchoServer, app: dict[str, str]) -> pusher.Pusher:
    """The app's Laravel, publishing through the Pusher HTTP API."""
    return pusher.Pusher(app_id=app["appId"], key=app["key"], secret=app["secret"],
                         host="127.0.0.1", port=server.port, ssl=False)


async def _trigger(server: EchoServer, app: dict[str, str], channel: str, data: Any) -> None:
    await asyncio.to_thread(_laravel(server, app).trigger, channel, "lead.assigned", data)


async def _status(server: EchoServer, path: str, headers: dict[str, str] | None = None) -> int:
    """An Engine.IO handshake's HTTP status at ``path``: 200 where Socket.IO is served."""
    async with http_client() as http, http.get(
            f"{server_url(server)}{path}?EIO=4&transport=polling", headers=headers) as response:
        return response.status


async def _served(server: EchoServer, path: str, status: int = 200,
                  within: float = 1.0) -> None:
    """Until a handshake at ``path`` gets ``status`` (a change reaches the server)."""
    deadline = asyncio.get_running_loop().time() + within
    while (got := await _status(server, path)) != status:
        assert asyncio.get_running_loop().time() < deadline, f"{path}: still {got}"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize(("path", "message"), [
    ("socket.io", "must be a path"), ("/", "must be a path"), ("/a//b", "must be a path"),
    ("/a/../b", "must be a path"), ("/a b", "must be a path"), ("/" + "a" * 200, "must be"),
    ("/x/socket.io.js", "must be a path"), ("/socket.io", "may not be, hold or sit under"),
    ("/socket.io/tenant", "sit under /socket.io"), ("/apps/x", "sit under /apps"),
    ("/app", "sit under /app"), ("/metrics", "/metrics"), ("/demo/socket.io", "/demo")])
def test_a_socketio_path_is_checked_once_in_the_model(path: str, message: str) -> None:
    with pytest.raises(AppConfigError, match=r"apps\[0\]\.socketioPath ") as caught:
        parse_apps([{**A, "socketioPath": path}], "apps")
    assert message in str(caught.value)


def test_hosts_are_bounded_and_endpoints_lead_to_one_app(tmp_path: Path) -> None:
    [app] = parse_apps([{**A, "socketioPath": "/a/socket.io/", "hosts": ["Tenant.Test"]}],
                       "apps")
    assert (app.socketio_path, app.hosts, app.serves_socketio) == (
        "/a/socket.io", ("tenant.test",), True)
    for hosts in (["x" * 254], ["a.test:8080"], ["a/b"], [f"h{n}.test" for n in range(101)]):
        with pytest.raises(AppConfigError, match="hosts must be a list of at most 100"):
            parse_apps([{**A, "hosts": hosts}], "apps")
    from tests.test_apps import config_error

    assert config_error(tmp_path, {"apps": [A, {**B, "socketioPath": A["socketioPath"]}]}) \
        == "two apps have the socketioPath '/a/socket.io'"
    assert config_error(tmp_path, {"apps": [{**A, "hosts": ["t.test"]},
                                            {**B, "hosts": ["t.test"]}]}) \
        == "two apps have the host 't.test'"


def test_the_reserved_paths_cover_every_route_of_the_server() -> None:
    """An app's path is routed first: it may not shadow another route."""
    from echo_server.adapters.pusher.endpoint import PREFIX
    from echo_server.web.demo_files import DemoFiles
    from echo_server.web.health import Health
    from echo_server.web.status_page import StatusPage

    routes = [*Health.PATHS, *StatusPage.PATHS, DemoFiles.PREFIX, "/metrics", PREFIX + "key",
              "/apps/1/events", "/users/1/terminate_connections", "/socket.io/"]
    for route in routes:
        assert any(overlaps(route.rstrip("/"), reserved) for reserved in RESERVED_PATHS), route


class _Callback:
    """An app's /broadcasting/auth as the index holds it: what matters here is its close."""

    closed: list[str] = []

    def __init__(self, app: App) -> None:
        self.host = app.auth_host

    async def authorize(self, request: AuthRequest) -> AuthResult:
        return AuthResult(403)

    async def close(self) -> None:
        self.closed.append(self.host)


@pytest.mark.parametrize("grace", [0.01, 10.0])
async def test_every_callback_the_index_made_is_closed_by_shutdown(grace: float) -> None:
    """One retired (its app is gone, a reload renewed them all) is closed after its grace,
    or at shutdown if that comes first, even in the step it was retired in; one in use, at
    shutdown: no connection pool outlives the server."""
    def apps(*hosts: str) -> list[App]:
        return parse_apps([{**A, "appId": f"30{n}", "key": f"k{n}", "socketioPath": f"/{n}",
                            "authHost": host} for n, host in enumerate(hosts)], "apps")

    _Callback.closed = []
    store = StaticStore(apps("http://a.test", "http://b.test"))
    index = SocketIoApps(store, "/socket.io", _Callback, lambda *_: None,
                         None,  # type: ignore[arg-type]  # no presence is asked here
                         close_grace=grace)
    store.replace(apps("http://a.test"))  # b's retired
    index.renew_callbacks(grace)  # a's retired, a new one made
    if grace < 1:
        await wait_until(lambda: len(_Callback.closed) == 2, "the retired ones are closed")
    await index.close()
    assert sorted(_Callback.closed) == ["http://a.test", "http://a.test", "http://b.test"]


def test_a_change_to_one_app_remakes_that_apps_authorizer_alone() -> None:
    """A NOTIFY names one app: the others' authorizers stay as they were, not made again
    (10,000 of them blocked the loop for tens of ms per NOTIFY); a renewed callback remakes
    every one that uses it."""
    a, b = parse_apps([{**A, "authHost": "http://a.test"}, B], "apps")
    store = StaticStore([a, b])
    index = SocketIoApps(store, "/socket.io", _Callback, lambda *_: None,
                         None)  # type: ignore[arg-type]  # no presence is asked here
    kept, changed = index.authorizer(a.tag), index.authorizer(b.tag)
    [b2] = parse_apps([{**B, "channels": {"private-x.*": {}}}], "apps")
    store.replace([a, b2])
    assert index.authorizer(a.tag) is kept
    assert index.authorizer(b.tag) is not changed
    index.renew_callbacks(0)  # outside a loop: the retired callback is not closed here
    assert index.authorizer(a.tag) is not kept


# --------------------------------------------------------------------------- the file's apps


@requires_node
@pytest.mark.parametrize("stack", ["echo2-sio4", "echo2-sio2"])
async def test_a_file_app_on_its_own_path_has_its_own_channels(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        redis: aioredis.Redis, stack: str) -> None:
    """The same channel name on the default app's `/socket.io/` and on app A's path: two
    channels, each reached by its own app's Laravel only; A's private channel asked of A's
    own /broadcasting/auth, under the name its page knows."""
    prefix = f"sio{secrets.token_hex(3)}_"
    auth_backend.allow_private("private-orders.1")
    server = await make_server({
        "database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "apps": [{**A, "authHost": auth_backend.url}, B]})
    default = await node_client(stack, server_url(server))
    tenant = await node_client(stack, server_url(server),
                               echo_options={"path": A["socketioPath"]})
    for page in (default, tenant):
        await page.expect("connected")
        await page.command({"cmd": "channel", "channel": CHANNEL, "listen": [".lead.assigned"]})
    await tenant.command({"cmd": "private", "channel": "orders.1", "listen": [".lead.assigned"]})
    await wait_until(lambda: server.core.rooms.count("private-orders.1\x1f3001") == 1
                     and server.core.rooms.count(CHANNEL) == 1, "both pages subscribed")

    await _trigger(server, A, CHANNEL, {"lead": 1})
    assert (await tenant.expect("event", channel=CHANNEL))["data"] == {"lead": 1}
    await redis.publish(prefix + CHANNEL, laravel_message("lead.assigned", {"lead": 2}))
    assert (await default.expect("event", channel=CHANNEL))["data"] == {"lead": 2,
                                                                        "socket": None}
    await _trigger(server, A, "private-orders.1", {"lead": 3})
    assert (await tenant.expect("event", channel="private-orders.1"))["data"] == {"lead": 3}
    # A's batch_events: one batch through the fan-out, under the names its page knows too.
    await asyncio.to_thread(_laravel(server, A).trigger_batch, [
        {"channel": CHANNEL, "name": "lead.assigned", "data": {"lead": 5}},
        {"channel": "private-orders.1", "name": "lead.assigned", "data": {"lead": 6}}])
    assert (await tenant.expect("event", channel=CHANNEL))["data"] == {"lead": 5}
    assert (await tenant.expect("event", channel="private-orders.1"))["data"] == {"lead": 6}
    await _trigger(server, B, CHANNEL, {"lead": 4})  # app B's channel of that name: nobody's
    await asyncio.gather(default.expect_none("event", within=0.3),
                         tenant.expect_none("event", within=0.0))
    assert [call.channel for call in auth_backend.calls] == ["private-orders.1"]
    # The client bundle is served beside the app's path too; a path nobody owns is not.
    async with http_client() as http, http.get(
            f"{server_url(server)}/a/socket.io/socket.io.js") as response:
        assert response.status == 200
    assert await _status(server, "/c/socket.io/") == 404


async def _frames_until_closed(ws: RawWebSocket) -> list[str]:
    """The Socket.IO packets a socket got before its connection closed (pings answered)."""
    texts: list[str] = []
    async with asyncio.timeout(5):
        while True:
            opcode, payload = await ws.recv_frame()
            if opcode in (-1, 0x8):
                return texts
            text = payload.decode()
            if text == "2":
                ws.send_text("3")
            else:
                texts.append(text)


async def test_open_sockets_follow_their_apps_through_a_reload(
        make_server: ServerFactory) -> None:
    """Disabled or gone: disconnected (`41`, socket.io-client does not come back, as
    pusher-js after 4003/4001); an endpoint now another app's: closed as a dropped
    connection, so the page reconnects into that app; the rest stay."""
    server = await make_server({"apps": [A, B]}, redis=False)
    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    on_a, _ = await socketio_client(server, path="/a/socket.io/")
    on_b, _ = await socketio_client(server, path="/b/socket.io/")
    claimed, _ = await socketio_client(server, headers={"Host": "c.test"})  # the default app
    kept, _ = await socketio_client(server)
    options["apps"] = [{**A, "enabled": False},
                       {**B, "socketioPath": "/b2/socket.io"},
                       {"appId": "3003", "key": "c-key", "secret": "c-secret",
                        "hosts": ["c.test"]}]
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()
    assert await _frames_until_closed(on_a) == ["41"]  # disabled
    assert await _frames_until_closed(on_b) == ["41"]  # its endpoint is nobody's now
    assert await _frames_until_closed(claimed) == []  # moved: reconnects into app C
    refused = await RawWebSocket.connect(server, "EIO=4&transport=websocket", path="/a/socket.io/")
    assert (await refused.recv_text()).startswith("0")
    refused.send_text("40")
    assert await refused.recv_text() == '44{"message":"App is disabled"}'
    again, _ = await socketio_client(server, headers={"Host": "c.test"})
    again.send_text(f'42["subscribe",{{"channel":"{CHANNEL}"}}]')
    await wait_until(lambda: server.core.rooms.count(CHANNEL + "\x1f3003") == 1, "in C's")
    assert await _status(server, "/b/socket.io/") == 404
    kept.send_text(f'42["subscribe",{{"channel":"{CHANNEL}"}}]')
    await wait_until(lambda: server.core.rooms.count(CHANNEL) == 1, "the default app's")


async def test_a_reloaded_auth_timeout_holds_for_an_isolated_apps_next_subscribe(
        make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    """The settings of an isolated app's /broadcasting/auth are the server's (``authTimeout``
    here): reloaded, they hold from its open page's next private subscribe though the app did
    not change. Its backend stalls: refused with 0 after the new 200 ms, where the 10 s of
    before would still be waiting."""
    stalled = asyncio.Event()

    async def stall(call: Any) -> bool:
        await stalled.wait()
        return True

    auth_backend.rules["private-slow"] = stall
    server = await make_server({"apps": [{**A, "authHost": auth_backend.url}],
                                "authTimeout": 10_000}, redis=False)
    page, _ = await socketio_client(server, path="/a/socket.io/")
    path = Path(server.config.config_file)
    path.write_text(json.dumps({**json.loads(path.read_text()), "authTimeout": 200}))
    assert await server.reloader.reload()
    page.send_text('42["subscribe",{"channel":"private-slow","auth":{"headers":{}}}]')
    try:
        async with asyncio.timeout(3):  # pings come meanwhile: one deadline over them all
            assert await page.next_event() == ["subscription_error", "private-slow", 0]
    finally:
        stalled.set()
    assert [call.channel for call in auth_backend.calls] == ["private-slow"]
    await page.close()


# --------------------------------------------------------------------------- PostgreSQL


def _database(server: EchoServer) -> PostgresStore:
    [database] = [store for store in server.apps.stores if isinstance(store, PostgresStore)]
    return database


@requires_node
async def test_a_postgres_app_given_a_path_and_a_host_live_then_disabled(
        make_server: ServerFactory, node_client: ClientFactory, postgres_url: str,
        apps_table: tuple[str, Any]) -> None:
    table, db = apps_table
    server = await database_server(make_server, postgres_url, table)
    app = {"appId": "42", "key": "db-key", "secret": "db-secret"}
    await db.execute(f'INSERT INTO "{table}" (id, key, secret) VALUES '
                     "('42', 'db-key', 'db-secret')")
    assert await _status(server, "/db/socket.io/") == 404
    # Given a path and a host name while the server runs: both lead to it within a second.
    await db.execute(f"UPDATE \"{table}\" SET options = $1::jsonb WHERE id = '42'",
                     json.dumps({"socketioPath": "/db/socket.io", "hosts": ["db.test"]}))
    await _served(server, "/db/socket.io/")
    by_path = await node_client("echo2-sio2", server_url(server), transports="websocket",
                                echo_options={"path": "/db/socket.io"})
    by_host = await node_client("echo2-sio4", server_url(server), transports="websocket",
                                extra_headers={"Host": f"db.test:{server.port}"})
    default = await node_client("echo2-sio4", server_url(server), transports="websocket")
    for page in (by_path, by_host, default):
        await page.expect("connected")
        await page.command({"cmd": "channel", "channel": "orders", "listen": [".lead.assigned"]})
    await wait_until(lambda: server.core.rooms.count("orders\x1f42") == 2
                     and server.core.rooms.count("orders") == 1, "subscribed")
    await _trigger(server, app, "orders", {"n": 1})
    for page in (by_path, by_host):
        assert (await page.expect("event"))["data"] == {"n": 1}
    await default.expect_none("event", within=0.2)

    # Disabled: its open pages are disconnected for good, a new one is refused.
    await db.execute(f"UPDATE \"{table}\" SET enabled = false WHERE id = '42'")
    for page in (by_path, by_host):
        assert (await page.expect("disconnected", timeout=2.0))["reason"] == \
            "io server disconnect"
    late = await node_client("echo2-sio4", server_url(server), transports="websocket",
                             echo_options={"path": "/db/socket.io"})
    assert (await late.expect("connect_error"))["message"] == "App is disabled"
    await default.expect_none("disconnected", within=0.0)
    # Removed: its path is nobody's.
    await db.execute(f"DELETE FROM \"{table}\" WHERE id = '42'")
    await _served(server, "/db/socket.io/", 404)


async def test_a_flood_of_made_up_hosts_and_paths_never_reaches_the_database(
        make_server: ServerFactory, postgres_url: str, apps_table: tuple[str, Any]) -> None:
    """Its apps' endpoints are read at start, once; whatever host names and paths
    handshakes bring afterwards is answered from memory."""
    table, db = apps_table
    app = {"appId": "42", "key": "db-key", "secret": "db-secret"}
    await db.execute(f'INSERT INTO "{table}" (id, key, secret, options) VALUES '
                     "('42', 'db-key', 'db-secret', $1::jsonb)",
                     json.dumps({"socketioPath": "/db/socket.io", "hosts": ["db.test"]}))
    server = await database_server(make_server, postgres_url, table)
    # Its own endpoints are its own, from the start.
    by_path, _ = await socketio_client(server, path="/db/socket.io/")
    by_host, _ = await socketio_client(server, headers={"Host": "db.test"})
    for ws in (by_path, by_host):
        ws.send_text('42["subscribe",{"channel":"orders"}]')
    await wait_until(lambda: server.core.rooms.count("orders\x1f42") == 2, "subscribed")
    await _trigger(server, app, "orders", {"n": 1})
    for ws in (by_path, by_host):
        assert (await ws.next_event())[:3] == ["lead.assigned", "orders", {"n": 1}]
    stats = _database(server).stats
    before = (stats.listings, stats.queries)  # one listing at start; the publish's lookup
    assert before == (1, 1)
    statuses = await asyncio.gather(
        *(_status(server, "/socket.io/", {"Host": f"{secrets.token_hex(8)}.test"})
          for _ in range(100)),
        *(_status(server, f"/{secrets.token_hex(8)}/socket.io/") for _ in range(100)))
    assert statuses == [200] * 100 + [404] * 100
    upgrades = [await RawWebSocket.connect(server, "EIO=4&transport=websocket",
                                           path=f"/{secrets.token_hex(8)}/socket.io/")
                for _ in range(20)]
    assert {ws.status for ws in upgrades} == {404}
    await asyncio.sleep(0)  # a lookup a handshake would have started has started
    assert (stats.listings, stats.queries) == before


async def test_the_index_is_read_again_after_the_listener_reconnects(
        make_server: ServerFactory, postgres_url: str, apps_table: tuple[str, Any]) -> None:
    """A change whose NOTIFY was lost is seen once the store listens again."""
    from echo_server.apps.postgres import APPLICATION_NAME

    table, db = apps_table
    server = await database_server(make_server, postgres_url, table)
    database = _database(server)
    await db.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
    await db.execute(f'INSERT INTO "{table}" (id, key, secret, options) VALUES '
                     "('43', 'silent-key', 'x', $1::jsonb)",
                     json.dumps({"socketioPath": "/silent/socket.io"}))
    await db.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
    assert await _status(server, "/silent/socket.io/") == 404
    await db.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE application_name = $1", APPLICATION_NAME)
    await wait_until(lambda: database.reconnects >= 1 and database.listening.is_set(),
                     "the store listens again")
    await _served(server, "/silent/socket.io/", within=2.0)


# --------------------------------------------------------------------------- recovery


async def _parked(server: EchoServer, socket_id: str) -> None:
    sessions = server.core.sessions
    assert sessions is not None
    await wait_until(lambda: any(p.id == socket_id for p in sessions.parked.values()),
                     "the drop noticed")


@requires_node
async def test_an_isolated_apps_page_recovers_what_it_missed(
        make_server: ServerFactory, node_client: ClientFactory,
        proxy_to: ProxyFactory) -> None:
    """laravel-echo on socket.io-client 4 at app A's path, its network dropped while A's
    Laravel publishes: back as the same socket, with the missed events in order."""
    server = await make_server({"apps": [A], **RECOVERY}, redis=False)
    proxy = await proxy_to(server)
    page = await node_client("echo2-sio4", proxy.url, transports="websocket",
                             echo_options={"path": A["socketioPath"]})
    socket_id = (await page.expect("connected"))["socketId"]
    await page.command({"cmd": "channel", "channel": CHANNEL, "listen": [".lead.assigned"]})
    await wait_until(lambda: server.core.rooms.count(CHANNEL + "\x1f3001") == 1, "subscribed")
    await _trigger(server, A, CHANNEL, {"n": 0})
    assert (await page.expect("event"))["data"] == {"n": 0}
    proxy.cut()
    await _parked(server, socket_id)
    for n in (1, 2):
        await _trigger(server, A, CHANNEL, {"n": n})
    proxy.release()
    back = await page.expect("connected", timeout=10)
    assert (back["recovered"], back["socketId"]) == (True, socket_id)
    assert [(await page.expect("event"))["data"]["n"] for _ in range(2)] == [1, 2]
    await _trigger(server, A, CHANNEL, {"n": 3})
    assert (await page.expect("event"))["data"] == {"n": 3}
    assert recoveries(server, "recovered") == 1


def _connect(pid: str, offset: str | None = None) -> str:
    return "40" + json.dumps({"pid": pid, **({"offset": offset} if offset else {})})


async def test_a_session_recovers_only_through_its_own_apps_endpoint(
        make_server: ServerFactory) -> None:
    """A's pid at B's path or at the default app's is refused (a new socket, counted as
    `other_app`) and leaves A's session for A's page; a default app's pid at A's path too."""
    server = await make_server({"apps": [A, B], **RECOVERY}, redis=False)
    ws, hello = await socketio_client(server, path="/a/socket.io/")
    ws.send_text(f'42["subscribe",{{"channel":"{CHANNEL}"}}]')
    await wait_until(lambda: server.core.rooms.count(CHANNEL + "\x1f3001") == 1, "subscribed")
    await _trigger(server, A, CHANNEL, {"n": 0})
    offset = (await ws.next_event())[3]
    ws.writer.transport.abort()
    await _parked(server, hello["sid"])
    await _trigger(server, A, CHANNEL, {"n": 1})
    for path in ("/b/socket.io/", "/socket.io/"):
        other, fresh = await socketio_client(server, _connect(hello["pid"], offset), path=path)
        assert fresh["sid"] != hello["sid"] and fresh["pid"] != hello["pid"]
        other.send_text(f'42["subscribe",{{"channel":"{CHANNEL}"}}]')
    assert recoveries(server, "other_app") == 2
    back, again = await socketio_client(server, _connect(hello["pid"], offset),
                                        path="/a/socket.io/")
    assert again == hello
    assert (await back.next_event())[1:3] == [CHANNEL, {"n": 1}]

    default, mine = await socketio_client(server)
    default.send_text(f'42["subscribe",{{"channel":"{CHANNEL}"}}]')
    await wait_until(lambda: server.core.rooms.count(CHANNEL) == 2, "subscribed")
    default.writer.transport.abort()
    await _parked(server, mine["sid"])
    _, fresh = await socketio_client(server, _connect(mine["pid"]), path="/a/socket.io/")
    assert fresh["sid"] != mine["sid"] and recoveries(server, "other_app") == 3
    _, again = await socketio_client(server, _connect(mine["pid"]))
    assert again == mine


async def test_across_instances_a_session_recovers_within_its_app_only(
        make_server: ServerFactory, redis_url: str) -> None:
    """Two instances reading one Redis stream: A's socket dropped from the first comes back
    to the second through A's path as the same socket, in its channel; through B's path or
    the default one it is refused (`other_app`) and its session stays."""
    stream = f"s{secrets.token_hex(3)}"
    url = redis_url.replace("redis://", "redis-stream://", 1) + \
        f"?stream={stream}&warmup=0&block=0.2"
    prefix = f"sio{secrets.token_hex(3)}_"
    first, second = [await make_server({
        "database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "sources": [url], "instanceId": f"{prefix}{name}", "apps": [A, B], **RECOVERY})
        for name in "ab"]
    async with Broadcaster(url) as publisher:  # the cluster has a place in the stream
        for _ in range(100):  # until both read it (each joins the stream as it starts)
            if all(s.core.fanout.positions and s.core.fanout.positions.stream
                   for s in (first, second)):
                break
            await publisher.publish("elsewhere", "lead.assigned", {"n": 0})
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the instances never read the stream")
    ws, hello = await socketio_client(first, path="/a/socket.io/")
    ws.send_text(f'42["subscribe",{{"channel":"{CHANNEL}"}}]')
    await wait_until(lambda: first.core.rooms.count(CHANNEL + "\x1f3001") == 1, "subscribed")
    shared = first.core.shared
    assert shared is not None
    client = aioredis.from_url(redis_url)
    try:
        await wait_until(lambda: hello["pid"] in shared.places, "recorded")
        ws.writer.transport.abort()
        await _parked(first, hello["sid"])
        key = shared.key(hello["pid"])
        for _ in range(200):
            if await client.hget(key, "o"):
                break
            await asyncio.sleep(0.01)
        for path in ("/b/socket.io/", "/socket.io/"):
            _, fresh = await socketio_client(second, _connect(hello["pid"]), path=path)
            assert fresh["sid"] != hello["sid"]
        assert recoveries(second, "other_app") == 2
        back, again = await socketio_client(second, _connect(hello["pid"]),
                                            path="/a/socket.io/")
        assert again == hello
        await wait_until(lambda: second.core.rooms.count(CHANNEL + "\x1f3001") == 1, "back")
        await _trigger(second, A, CHANNEL, {"n": 1})
        assert (await back.next_event())[1:3] == [CHANNEL, {"n": 1}]
    finally:
        await client.aclose()
