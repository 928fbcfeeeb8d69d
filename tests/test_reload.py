"""Reload as an operator does it: a real server process and its laravel-echo-server.json;
the file is edited, then `echo-server reload` (or SIGHUP) applies it while the clients already
connected, over websocket and over polling, stay connected and keep receiving events."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.conftest import free_port, redis_config
from tests.support.logged_process import LoggedProcess
from tests.support.raw import Polling, http_request, open_ws, ws_recv
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
    async with aiohttp.ClientSession() as session:
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
