"""Apps served, from every store: the file's ``apps`` next to its ``clients``, and a
PostgreSQL table changed while real clients are connected (pusher-js through Laravel Echo,
the Python ``pusher`` package publishing). An unknown app is refused with each protocol's
own error, a disabled one too, and a flood of unknown keys reaches the database once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pusher
import pytest

from echo_server.adapters.pusher.endpoint import PusherEndpoint
from echo_server.adapters.socketio_apps import SocketIoApps
from echo_server.apps.postgres import PostgresStore
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, database_server, requires_node, server_url
from tests.support.http import http_client
from tests.support.raw import RawWebSocket, pusher_client, socketio_client
from tests.support.waits import ClientFactory, wait_until
from tests.support.webhook_receiver import WebhookReceiver

FILE_APP = {"appId": "2001", "key": "staging-key", "secret": "staging-secret",
            "apiKey": "staging-api-key", "name": "Staging"}


def _laravel(server: EchoServer, app_id: str, key: str, secret: str) -> pusher.Pusher:
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1",
                         port=server.port, ssl=False)


async def _trigger(client: pusher.Pusher, channel: str, data: Any) -> Any:
    return await asyncio.to_thread(client.trigger, channel, "lead.assigned", data)


async def _refused_with(server: EchoServer, key: str) -> int:
    ws = await RawWebSocket.connect(server, "protocol=7&client=js&version=8.4.0",
                                    path=f"/app/{key}")
    error = json.loads(await ws.recv_text())
    assert error["event"] == "pusher:error", error
    code = await ws.wait_closed()
    assert code == error["data"]["code"]
    return int(code)


@requires_node
async def test_a_file_app_is_served_next_to_the_clients(
        make_server: ServerFactory, node_client: ClientFactory) -> None:
    disabled = {"appId": "2002", "key": "old-key", "secret": "old-secret", "enabled": False}
    server = await make_server({"apps": [FILE_APP, disabled]}, redis=False)
    page = await node_client("echo2-reverb", server_url(server),
                             extra_args=["--key", FILE_APP["key"]])
    await page.expect("connected")
    await page.command({"cmd": "channel", "channel": "leads-management",
                        "listen": [".lead.assigned"]})
    # The core holds an isolated app's channel under its tag (apps/tags.py).
    await wait_until(lambda: server.core.rooms.count("leads-management\x1f2001") == 1,
                     "subscribed")
    laravel = _laravel(server, "2001", FILE_APP["key"], FILE_APP["secret"])
    await _trigger(laravel, "leads-management", {"lead": 1})
    assert (await page.expect("event"))["data"] == {"lead": 1}

    # Refusals, each protocol's own.
    assert await _refused_with(server, "nobody") == 4001
    assert await _refused_with(server, "old-key") == 4003
    assert await _refused_with(server, "test-key") == 4001  # an API client is no Pusher app
    # The reference's API: the app's apiKey opens its id, not another's.
    async with http_client() as http:
        base = server_url(server)
        for path, key, status in (("/apps/2001/status", "staging-api-key", 200),
                                  ("/apps/2001/status", "staging-key", 403),
                                  ("/apps/test-app/status", "staging-api-key", 403),
                                  ("/apps/2002/status", "old-key", 403)):
            async with http.get(f"{base}{path}?auth_key={key}") as response:
                assert response.status == status, (path, key)


async def test_the_pusher_api_says_which_refusal(make_server: ServerFactory) -> None:
    """Disabled: 403 (Pusher's "app disabled"); unknown: 401; another app's id: 401."""
    server = await make_server({"apps": [FILE_APP, {
        "appId": "2002", "key": "old-key", "secret": "old-secret", "enabled": False}]},
        redis=False)
    for app_id, key, secret, refusal in (
            ("2002", "old-key", "old-secret", pusher.errors.PusherForbidden),
            ("2001", "nobody", "x", pusher.errors.PusherBadAuth),
            ("2002", FILE_APP["key"], FILE_APP["secret"], pusher.errors.PusherBadAuth)):
        with pytest.raises(refusal):
            await _trigger(_laravel(server, app_id, key, secret), "leads-management", {})


# --------------------------------------------------------------------------- PostgreSQL


@requires_node
async def test_a_postgres_app_added_rotated_and_disabled_while_clients_are_connected(
        make_server: ServerFactory, node_client: ClientFactory, postgres_url: str,
        apps_table: tuple[str, asyncpg.Connection]) -> None:
    """Two instances: the page on one, its Laravel publishing through the other."""
    table, db = apps_table
    cluster = {"database": "redis", "cluster": {"heartbeatInterval": 100, "livenessTtl": 400}}
    server = await database_server(make_server, postgres_url, table, **cluster)
    publisher = await database_server(make_server, postgres_url, table, **cluster)
    # Added while the servers run: its first client and its first publish find it.
    await db.execute(f'INSERT INTO "{table}" (id, key, secret, name) VALUES '
                     "('42', 'db-key', 'db-secret', 'Tenant')")
    page = await node_client("echo2-pusher", server_url(server), extra_args=["--key", "db-key"])
    await page.expect("connected")
    await page.command({"cmd": "channel", "channel": "orders", "listen": [".lead.assigned"]})
    await wait_until(lambda: server.core.rooms.count("orders\x1f42") == 1, "subscribed")
    await _trigger(_laravel(publisher, "42", "db-key", "db-secret"), "orders", {"n": 1})
    assert (await page.expect("event"))["data"] == {"n": 1}

    # Rotated: the old secret is refused at once, the new one publishes.
    await db.execute(f"UPDATE \"{table}\" SET secret = 'rotated' WHERE id = '42'")
    old = _laravel(publisher, "42", "db-key", "db-secret")
    new = _laravel(publisher, "42", "db-key", "rotated")

    async def old_secret_refused() -> bool:
        try:
            await _trigger(old, "orders", {"n": 0})
        except pusher.errors.PusherError:
            return True
        return False

    for _ in range(50):  # NOTIFY is milliseconds; the bound is a second
        if await old_secret_refused():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the rotated secret was not seen within a second")
    await _trigger(new, "orders", {"n": 2})
    assert (await page.expect("event"))["data"] == {"n": 2}

    # Disabled: the connected page is told 4003 and closed; publishes are refused.
    await db.execute(f"UPDATE \"{table}\" SET enabled = false WHERE id = '42'")
    await page.expect("disconnected", timeout=2.0)
    await wait_until(lambda: not server.part(PusherEndpoint).connections, "closed", timeout=1.0)
    with pytest.raises(pusher.errors.PusherError):
        await _trigger(new, "orders", {"n": 3})
    assert await _refused_with(server, "db-key") == 4003


async def test_a_flood_of_unknown_keys_asks_the_database_once(
        make_server: ServerFactory, postgres_url: str,
        apps_table: tuple[str, asyncpg.Connection]) -> None:
    table, _db = apps_table
    server = await database_server(make_server, postgres_url, table)
    codes = await asyncio.gather(*(_refused_with(server, "flood-key") for _ in range(40)))
    assert set(codes) == {4001}
    [database] = [store for store in server.apps.stores if isinstance(store, PostgresStore)]
    assert database.stats.queries == 1
    unknown = _laravel(server, "1", "flood-key", "x")
    for _ in range(20):
        with pytest.raises(pusher.errors.PusherBadAuth):
            await _trigger(unknown, "orders", {})
    assert database.stats.queries == 1 and database.stats.negative_hits == 20


async def test_the_files_apps_change_on_a_reload(make_server: ServerFactory) -> None:
    """An `apps` entry added is served at once; one disabled closes its clients with 4003,
    one removed with 4001; a rotated secret signs from now on."""
    other = {"appId": "2003", "key": "other-key", "secret": "other-secret"}
    server = await make_server({"apps": [FILE_APP, other]}, redis=False)
    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    kept = await pusher_client(server, FILE_APP["key"])
    gone = await pusher_client(server, "other-key")
    added = {"appId": "2004", "key": "new-key", "secret": "new-secret"}
    options["apps"] = [{**FILE_APP, "secret": "rotated", "enabled": False}, added]
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()
    for (ws, _), code in ((kept, 4003), (gone, 4001)):
        error = json.loads(await ws.recv_text())
        assert error["data"]["code"] == code
        assert await ws.wait_closed() == code
    await pusher_client(server, "new-key")
    await _trigger(_laravel(server, "2004", "new-key", "new-secret"), "orders", {})
    with pytest.raises(pusher.errors.PusherBadAuth):
        await _trigger(_laravel(server, "2003", "other-key", "other-secret"), "orders", {})


@pytest.mark.parametrize("protocol", ["pusher", "socket.io"])
async def test_a_postgres_apps_webhooks_start_with_its_first_client(
        make_server: ServerFactory, postgres_url: str,
        apps_table: tuple[str, asyncpg.Connection], protocol: str) -> None:
    """Its first Pusher client, or its first Socket.IO page (at its own path)."""
    table, db = apps_table
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        server = await database_server(
            make_server, postgres_url, table,
            webhooks={"batchMs": 50, "retryBaseMs": 50, "retryMaxMs": 200, "pollMs": 20})
        await db.execute(f'INSERT INTO "{table}" (id, key, secret, options) VALUES '
                         "('43', 'hooked-key', 'hooked-secret', $1::jsonb)",
                         json.dumps({"socketioPath": "/hooked/socket.io",
                                     "webhooks": [{"url": receiver.url,
                                                   "event_types": ["channel_occupied"]}]}))
        if protocol == "pusher":
            ws, _ = await pusher_client(server, "hooked-key")
            ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": "room"}}))
        else:
            await wait_until(lambda: "/hooked/socket.io" in server.part(SocketIoApps).by_path,
                             "its path served")
            ws, _ = await socketio_client(server, path="/hooked/socket.io/")
            ws.send_text('42["subscribe",{"channel":"room"}]')
        [event] = await receiver.wait_events(1)
        assert (event["name"], event["channel"]) == ("channel_occupied", "room")
        assert receiver.deliveries[0].signed_with("hooked-secret")
        assert receiver.deliveries[0].headers["X-Pusher-Key"] == "hooked-key"
    finally:
        await receiver.stop()
