"""Reload as an operator does it: a real server process and its laravel-echo-server.json;
the file is edited, then `echo-server reload` (or SIGHUP) applies it while the clients already
connected, over websocket and over polling, stay connected and keep receiving events."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import jwt
import pytest

from channel_auth import AuthRequest
from echo_server.adapters.pusher.apps import SignatureAuthorizer
from echo_server.apps.model import App
from echo_server.config import Config
from echo_server.process.reload import lost_settings
from echo_server.process.server import EchoServer
from tests.conftest import free_port, redis_config
from tests.support.http import http_client
from tests.support.logged_process import LoggedProcess
from tests.support.raw import (
    Polling,
    RawWebSocket,
    http_request,
    next_pusher_message,
    open_ws,
    pusher_client,
    ws_recv,
)
from tests.support.waits import wait_member

OLD_SECRET = "old-secret-0123456789-0123456789-0123"
NEW_SECRET = "new-secret-0123456789-0123456789-0123"
NEW_ORIGIN = "https://admin.example.com"


def settings(port: int, redis_url: str, *, key: str, secret: str, origins: str,
             **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "clients": [{"appId": "app", "key": key}],
            "socketio": {"origins": origins},
            "jwt": {"algorithms": ["HS256"], "secret": secret, "required": False},
            **redis_config(redis_url), **extra}


def token(secret: str) -> str:
    return jwt.encode({"sub": "42"}, secret, algorithm="HS256")


def echo(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LARAVEL_ECHO_SERVER_",
                                                                      "ECHO_"))}
    return [sys.executable, "-m", "echo_server", *args], {**env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as session:
        yield session


async def status_code(http: aiohttp.ClientSession, base: str, key: str) -> int:
    return (await http_request(http, "GET", f"{base}/apps/app/status",
                               headers={"Authorization": f"Bearer {key}"})).status


async def publish(http: aiohttp.ClientSession, base: str, key: str, n: int) -> None:
    reply = await http_request(http, "POST", f"{base}/apps/app/events",
                               params={"auth_key": key},
                               json={"channel": "news", "name": "tick", "data": {"n": n}})
    assert reply.status == 200, reply.body


async def connect_with_token(http: aiohttp.ClientSession, base: str, jwt_token: str) -> str:
    """An EIO4 websocket's Socket.IO connect with the token in its payload: ``40{...}`` when
    admitted, ``44{"message"}`` when refused."""
    ws = await open_ws(http, base, eio=4)
    try:
        assert (await ws_recv(ws)).startswith("0{")
        await ws.send_str("40" + json.dumps({"token": jwt_token}))
        return (await ws_recv(ws, pong=True))[:2]
    finally:
        await ws.close()


async def handshake_status(http: aiohttp.ClientSession, base: str, origin: str) -> int:
    return (await http_request(http, "GET", f"{base}/socket.io/?EIO=4&transport=polling",
                               headers={"Origin": origin})).status


async def test_reload_applies_clients_origins_and_jwt_without_dropping_anyone(
        tmp_path: Path, http, redis_url: str) -> None:
    port = free_port()
    config = tmp_path / "laravel-echo-server.json"
    config.write_text(json.dumps(settings(port, redis_url, key="old-key", secret=OLD_SECRET,
                                          origins="app.example.com:443")))
    argv, env = echo("start", "--dir", str(tmp_path))
    server = LoggedProcess(argv, cwd=tmp_path, env=env)
    await server.start()
    try:
        await server.wait_for_line("listening on")
        base = f"http://127.0.0.1:{port}"

        # Two clients of the old configuration, subscribed to one channel.
        ws = await open_ws(http, base, eio=3)
        assert (await ws_recv(ws)).startswith("0{")
        assert await ws_recv(ws) == "40"
        await ws.send_str('42["subscribe",{"channel":"news"}]')
        polling = Polling(http, base, eio=3)
        _, packets = await polling.handshake()
        if "40" not in packets:
            await polling.get_until(lambda p: p == "40")
        await polling.post('42["subscribe",{"channel":"news"}]')

        async def both_receive(n: int) -> None:
            expected = f'42["tick","news",{{"n":{n}}}]'
            while True:  # subscribes are not acknowledged: publish until the event arrives
                await publish(http, base, key, n)
                with contextlib.suppress(TimeoutError):
                    if await ws_recv(ws, timeout=0.5) == expected:
                        break
            assert (await polling.get_until(lambda p: p == expected))[0] == expected

        key = "old-key"
        await both_receive(1)
        assert await status_code(http, base, "new-key") == 403
        assert await handshake_status(http, base, NEW_ORIGIN) == 403
        assert await connect_with_token(http, base, token(NEW_SECRET)) == "44"
        assert await connect_with_token(http, base, token(OLD_SECRET)) == "40"

        # New key, new origin, new secret; a new port too, which needs a restart.
        config.write_text(json.dumps(settings(
            free_port(), redis_url, key="new-key", secret=NEW_SECRET,
            origins=f"app.example.com:443 {NEW_ORIGIN}")))
        argv, _ = echo("reload", "--dir", str(tmp_path))
        reload_cli = LoggedProcess(argv, cwd=tmp_path, env=env)
        await reload_cli.start()
        assert await reload_cli.wait_exit() == 0, reload_cli.lines
        await server.wait_for_line(r"configuration reloaded from .*: applied clients, jwt\.secret, "
                                   r"socketio\.origins")
        await server.wait_for_line(r"configuration reload: not applied, needs a restart: "
                                   r"port;")
        assert not [line for line in server.lines if NEW_SECRET in line or "new-key" in line]

        assert await status_code(http, base, "old-key") == 403
        assert await status_code(http, base, "new-key") == 200
        assert await handshake_status(http, base, NEW_ORIGIN) == 200
        assert await connect_with_token(http, base, token(NEW_SECRET)) == "40"
        assert await connect_with_token(http, base, token(OLD_SECRET)) == "44"
        key = "new-key"
        await both_receive(2)  # both clients of before the reload are still there

        # A file that cannot be used is refused; the running configuration stays.
        config.write_text('{"clients": [{"appId": "app", "key": "newest-key"}')
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        await server.wait_for_line(r"configuration reload refused, the running configuration "
                                   r"stays: .*laravel-echo-server\.json is not valid JSON")
        assert await status_code(http, base, "new-key") == 200
        assert await status_code(http, base, "newest-key") == 403
        # So is an empty one: the defaults would turn JWT off and open every origin.
        config.write_text("{}")
        server.proc.send_signal(signal.SIGHUP)
        await server.wait_for_line(r"configuration reload refused, the running configuration "
                                   r"stays: .* lacks what the running configuration sets: "
                                   r"clients, databaseConfig, host, jwt, port, socketio")
        assert await handshake_status(http, base, NEW_ORIGIN) == 200
        assert await handshake_status(http, base, "https://elsewhere.example") == 403
        assert await connect_with_token(http, base, token(OLD_SECRET)) == "44"
        await both_receive(3)
        assert not ws.closed
        await ws.close()
        assert await server.stop() == 0
    finally:
        await server.kill()


async def test_reload_without_a_running_server_says_so(tmp_path: Path) -> None:
    argv, env = echo("reload", "--dir", str(tmp_path))
    process = LoggedProcess(argv, cwd=tmp_path, env=env)
    await process.start()
    assert await process.wait_exit() == 1
    assert any("no server runs with this config" in line for line in process.lines)


async def test_auth_host_and_metrics_token_change_live(make_server, auth_backend, http) -> None:
    """The authorizer chain is rebuilt (an open socket's next subscribe asks the new auth
    host) and /metrics takes the new token; embedded, `reloader.reload()` is what SIGHUP
    runs."""
    dead = f"http://127.0.0.1:{free_port()}"
    server = await make_server({"authHost": dead, "metrics": {"token": "old-token"}},
                               redis=False)
    base = f"http://127.0.0.1:{server.port}"
    ws = await open_ws(http, base, eio=3)
    assert (await ws_recv(ws)).startswith("0{")
    assert await ws_recv(ws) == "40"
    await ws.send_str('42["subscribe",{"channel":"private-orders.1"}]')
    assert await ws_recv(ws) == '42["subscription_error","private-orders.1",0]'

    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    options["authHost"] = auth_backend.url
    options["metrics"]["token"] = "new-token"
    path.write_text(json.dumps(options))
    auth_backend.allow_private("private-orders.1")
    assert await server.reloader.reload()

    await ws.send_str('42["subscribe",{"channel":"private-orders.1"}]')
    await wait_member(server, "private-orders.1", next(iter(server.core.connections)))
    assert [call.channel for call in auth_backend.calls] == ["private-orders.1"]
    for token, expected in (("old-token", 403), ("new-token", 200)):
        reply = await http_request(http, "GET", f"{base}/metrics",
                                   headers={"Authorization": f"Bearer {token}"})
        assert reply.status == expected
    await ws.close()


PUSHER_KEY, OTHER_KEY = "panel-key", "other-panel-key"


def pusher_app(key: str = PUSHER_KEY, secret: str = OLD_SECRET, **options: Any) -> dict[str, Any]:
    return {"appId": f"app-{key}", "key": key, "secret": secret, **options}


def rewrite(path: Path, **changes: Any) -> None:
    """The file with ``changes`` at the top level (None: the key removed)."""
    options = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in options.items() if v is not None}))


async def reload_with(server: EchoServer, **changes: Any) -> bool:
    rewrite(Path(server.config.config_file), **changes)
    return await server.reloader.reload()


def signed(secret: str, text: str, key: str = PUSHER_KEY) -> str:
    return f"{key}:" + hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


async def test_a_reload_never_falls_back_to_the_defaults(
        make_server, http, caplog: pytest.LogCaptureFixture) -> None:
    """A missing file, `{}`, a section or a setting dropped, the last client gone: each is
    refused whole, and JWT, the origins, the API key and the Pusher app stay as they were.
    What is written on purpose (`"jwt": false`) is applied."""
    server = await make_server({
        "clients": [{"appId": "app", "key": "api-key"}, pusher_app()],
        "socketio": {"origins": "app.example.com:443"},
        "jwt": {"algorithms": ["HS256"], "secret": OLD_SECRET, "required": False}},
        redis=False)
    base = f"http://127.0.0.1:{server.port}"
    path = Path(server.config.config_file)
    running, text = server.config, path.read_text()
    before, _ = await pusher_client(server, PUSHER_KEY)
    socketio = {k: v for k, v in json.loads(text)["socketio"].items() if k != "origins"}
    attempts = [
        (lambda: path.unlink(), r"laravel-echo-server\.json does not exist, and a reload "
                                r"never falls back to the defaults"),
        (lambda: path.write_text("{}"), r"lacks what the running configuration sets: clients, "
                                        r"host, jwt, port, socketio, subscribers;"),
        (lambda: rewrite(path, jwt=None), r"sets: jwt;"),
        (lambda: rewrite(path, socketio=socketio), r"sets: socketio\.origins;"),
        (lambda: rewrite(path, clients=[]), r"sets: clients \(none left\);"),
    ]
    for change, refusal in attempts:
        caplog.clear()
        change()
        assert not await server.reloader.reload()
        assert server.config is running
        assert [re.search(r"configuration reload refused, the running configuration stays: "
                          + ".*" + refusal, r.getMessage()) is not None
                for r in caplog.records if r.name == "echo_server.reload"] == [True]
        path.write_text(text)
    assert not any("development client" in r.getMessage() for r in caplog.records)
    assert await handshake_status(http, base, NEW_ORIGIN) == 403
    assert await status_code(http, base, "api-key") == 200
    assert await connect_with_token(http, base, "not-a-token") == "44"
    assert await connect_with_token(http, base, token(OLD_SECRET)) == "40"
    after, _ = await pusher_client(server, PUSHER_KEY)
    for ws in (before, after):
        ws.send_text('{"event":"pusher:ping","data":{}}')
        assert (await next_pusher_message(ws))["event"] == "pusher:pong"
        await ws.close()

    # Turning a section off, written down, is a change like any other.
    assert await reload_with(server, jwt=False)
    assert await connect_with_token(http, base, "not-a-token") == "40"


async def test_reloaded_origins_reach_the_pusher_endpoint(make_server) -> None:
    """`socketio.origins` and an app's `allowedOrigins`, both reloaded, decide who may open
    `/app/{key}` (a browser's Origin header)."""
    server = await make_server({"clients": [pusher_app()],
                                "socketio": {"origins": "app.example.com:443"}}, redis=False)

    async def opens(origin: str) -> int | str:
        """101's connection_established, else the HTTP status or the pusher:error code."""
        ws = await RawWebSocket.connect(server, "protocol=7", path=f"/app/{PUSHER_KEY}",
                                        headers={"Origin": origin})
        try:
            if ws.status != 101:
                return ws.status
            msg = await next_pusher_message(ws)
            return msg["event"] if msg["event"] != "pusher:error" else msg["data"]["code"]
        finally:
            await ws.close()

    established = "pusher:connection_established"
    assert await opens(NEW_ORIGIN) == 403
    socketio = {**server.config.file_options["socketio"],
                "origins": f"app.example.com:443 {NEW_ORIGIN}"}
    assert await reload_with(server, socketio=socketio)
    assert await opens(NEW_ORIGIN) == established
    assert await opens("https://app.example.com") == established
    assert await reload_with(server, clients=[pusher_app(allowedOrigins=[NEW_ORIGIN])])
    assert await opens(NEW_ORIGIN) == established
    assert await opens("https://app.example.com") == 4009


async def test_a_rotated_secret_signs_for_connections_opened_before(make_server) -> None:
    """After the reload, a connection of before is held to the new secret: the old one's
    signatures are refused (private, presence, sign-in), the new one's accepted."""
    server = await make_server({"clients": [pusher_app()]}, redis=False)
    ws, socket_id = await pusher_client(server, PUSHER_KEY)
    assert await reload_with(server, clients=[pusher_app(secret=NEW_SECRET)])

    member = json.dumps({"user_id": 7, "user_info": {"name": "Ayşe"}})
    user = json.dumps({"id": "7"})
    for secret, subscribed, signed_in in ((OLD_SECRET, "pusher:subscription_error", 4009),
                                          (NEW_SECRET, "pusher_internal:subscription_succeeded",
                                           None)):
        suffix = secret[:3]
        for channel, data in ((f"private-orders.{suffix}", None),
                              (f"presence-room.{suffix}", member)):
            text = f"{socket_id}:{channel}" + (f":{data}" if data else "")
            ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {
                "channel": channel, "auth": signed(secret, text), "channel_data": data}}))
            answer = await next_pusher_message(ws)
            assert (answer["event"], answer["channel"]) == (subscribed, channel)
        ws.send_text(json.dumps({"event": "pusher:signin", "data": {
            "auth": signed(secret, f"{socket_id}::user::{user}"), "user_data": user}}))
        answer = await next_pusher_message(ws)
        assert answer["event"] == ("pusher:error" if signed_in else "pusher:signin_success")
        assert answer["data"].get("code") == signed_in
    await ws.close()


async def test_a_removed_apps_connections_are_closed_with_4001(
        make_server, caplog: pytest.LogCaptureFixture) -> None:
    server = await make_server({"clients": [pusher_app(), pusher_app(OTHER_KEY)]}, redis=False)
    kept, _ = await pusher_client(server, PUSHER_KEY)
    removed = [(await pusher_client(server, OTHER_KEY))[0] for _ in range(2)]
    assert await reload_with(server, clients=[pusher_app()])
    for ws in removed:
        assert await next_pusher_message(ws) == {"event": "pusher:error", "data": {
            "code": 4001, "message": "App key does not exist"}}
        assert await ws.wait_closed() == 4001
    assert "2 Pusher connection(s) of a removed app closed with 4001" in caplog.text
    assert server.seats.count(OTHER_KEY) == 0
    kept.send_text('{"event":"pusher:ping","data":{}}')
    assert (await next_pusher_message(kept))["event"] == "pusher:pong"
    await kept.close()


async def test_the_development_client_stays_while_the_default_app_has_no_other(
        make_server, http) -> None:
    """Started without an app, the server made up an API client of the default app; a
    reload that adds only an isolated app (none of the default app's clients) keeps it: its
    key may be in use."""
    server = await make_server({"clients": []}, redis=False)
    client = server.dev_client
    assert client is not None

    async def status() -> int:
        return (await http_request(http, "GET", f"http://127.0.0.1:{server.port}/apps/"
                                   f"{client['appId']}/status",
                                   params={"auth_key": client["key"]})).status

    assert await status() == 200
    assert await reload_with(server, apps=[pusher_app(OTHER_KEY)])
    assert await status() == 200


async def test_a_reloaded_activity_timeout_holds_for_connections_already_open(make_server) -> None:
    """An app's activityTimeoutMs shortened by a reload: a connection opened under the old
    one (30 s) is pinged once it has been silent for the new one, not 30 s after its last
    message; one that answers stays."""
    server = await make_server({"clients": [pusher_app()]}, redis=False)
    ws, _ = await pusher_client(server, PUSHER_KEY)
    assert await reload_with(server, clients=[pusher_app(activityTimeoutMs=200)])
    for _ in range(2):
        assert json.loads(await ws.recv_text(timeout=3)) == {"event": "pusher:ping", "data": {}}
        ws.send_text('{"event":"pusher:pong","data":{}}')
    ws.send_text('{"event":"pusher:ping","data":{}}')
    assert await next_pusher_message(ws) == {"event": "pusher:pong", "data": {}}
    await ws.close()


async def test_reloaded_keep_alive_timeouts_hold_for_connections_already_open(
        make_server) -> None:
    """`pusher.activityTimeoutMs` and `pusher.pongTimeoutMs` set by a reload: a connection
    opened under the defaults (30 s each) is pinged once silent for the new activity timeout,
    and closed with 4201 when the new pong timeout passes unanswered, not 30 s later."""
    server = await make_server({"clients": [pusher_app()]}, redis=False)
    ws, _ = await pusher_client(server, PUSHER_KEY)
    assert await reload_with(server, pusher={"activityTimeoutMs": 200, "pongTimeoutMs": 300})
    assert json.loads(await ws.recv_text(timeout=3)) == {"event": "pusher:ping", "data": {}}
    assert json.loads(await ws.recv_text(timeout=3)) == {"event": "pusher:error", "data": {
        "code": 4201, "message": "Pong reply not received in time"}}
    assert await ws.wait_closed(timeout=1) == 4201


async def test_a_signature_in_flight_is_checked_against_the_app_of_now() -> None:
    """A subscribe read before a reload and checked after it meets the new secret."""
    connection = SimpleNamespace(app=App("app", PUSHER_KEY, OLD_SECRET))
    request = AuthRequest(channel="private-x", socket_id="1.2")
    authorizer = SignatureAuthorizer(connection, signed(OLD_SECRET, "1.2:private-x"), None)
    connection.app = App("app", PUSHER_KEY, NEW_SECRET)
    assert (await authorizer.authorize(request)).status == 401


RUNNING = {"clients": [{"appId": "app", "key": "api-key"}], "jwt": {"secret": OLD_SECRET},
           "socketio": {"origins": "app.example.com:443", "pingInterval": 25000},
           "channels": {"private-orders.{id}": {"require": {"sub": "{id}"}}},
           "headers": {"X-Frame-Options": "DENY"}}


@pytest.mark.parametrize(("options", "environ", "lost"), [
    (RUNNING, {"ECHO_JWT_ISSUER": "x"}, []),
    ({**RUNNING, "jwt": False, "channels": {}, "headers": {}}, {"ECHO_JWT_ISSUER": "x"}, []),
    ({**RUNNING, "socketio": {"pingInterval": 25000}}, {"ECHO_JWT_ISSUER": "x"},
     ["socketio.origins"]),
    ({k: v for k, v in RUNNING.items() if k != "socketio"}, {"ECHO_JWT_ISSUER": "x"},
     ["socketio"]),
    ({**RUNNING, "clients": []}, {"ECHO_JWT_ISSUER": "x"}, ["clients (none left)"]),
    (RUNNING, {"ECHO_JWT_ISSUER": ""}, []),
    (RUNNING, {}, ["ECHO_JWT_ISSUER"]),
    (None, {"ECHO_JWT_ISSUER": "x"}, ["the file itself"]),
])
def test_what_a_reload_counts_as_lacking(options: dict[str, Any] | None, environ: dict[str, str],
                                         lost: list[str]) -> None:
    def config(options: dict[str, Any] | None, environ: dict[str, str]) -> Config:
        return Config(raw={"clients": (options or {}).get("clients", [])},
                      file_options=options, environ=environ)

    running = config(RUNNING, {"ECHO_JWT_ISSUER": "x", "HOME": "/root"})
    assert lost_settings(running, config(options, environ), None) == lost
    # A run without a file, or with only the generated development client, may stay so.
    dev_client = {"appId": "dev", "key": "dev-key"}
    assert lost_settings(config(None, {}), config(None, {}), None) == []
    with_dev_client = Config(raw={"clients": [dev_client]}, file_options={"clients": []})
    assert lost_settings(with_dev_client, config({"clients": []}, {}), dev_client) == []
