"""`echo-server start` as a real process: embedded defaults, the in-memory bus,
switching over to Redis when it appears, TLS, and a clean SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from tests.conftest import RedisProcess, _redis_server_binary, free_port, laravel_message
from tests.support.http import http_client
from tests.support.logged_process import LoggedProcess


class ServerProcess(LoggedProcess):
    """`python -m echo_server start` with its output collected line by line; started once
    it says it listens."""

    def __init__(self, directory: Path, port: int, env: dict[str, str], *args: str) -> None:
        super().__init__([sys.executable, "-m", "echo_server", "start", "--dir",
                          str(directory), *args], cwd=directory, env=env)
        self.port = port

    async def start(self) -> None:
        await super().start()
        await self.wait_for_line(r"listening on", timeout=15)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LARAVEL_ECHO_SERVER_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        await process.kill()


async def _connected_client(url: str, channel: str) -> tuple[socketio.AsyncClient, asyncio.Queue]:
    """python-socketio's AsyncClient (EIO4) subscribed to a public channel."""
    received: asyncio.Queue = asyncio.Queue()
    client = socketio.AsyncClient(reconnection=False)

    @client.on("*")
    async def any_event(event: str, *args: object) -> None:
        await received.put((event, args))

    await client.connect(url, transports=["websocket"])
    await client.emit("subscribe", {"channel": channel})
    return client, received


async def test_embedded_defaults_memory_bus_then_redis(tmp_path: Path, processes) -> None:
    """No config file, no Redis: the server runs on the in-memory bus, prints a dev key,
    and switches to Redis by itself once Redis answers on the configured port."""
    binary = _redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary to start later")
    port, redis_port = free_port(), free_port()
    server = ServerProcess(tmp_path, port, _env(
        LARAVEL_ECHO_SERVER_PORT=str(port), LARAVEL_ECHO_SERVER_HOST="127.0.0.1",
        LARAVEL_ECHO_SERVER_REDIS_PORT=str(redis_port),
        LARAVEL_ECHO_SERVER_REDIS_HOST="127.0.0.1"))
    processes.append(server)
    await server.start()
    await server.wait_for_line(r"Redis is not reachable .*in-memory bus")
    key = re.search(r"appId=(\w+) key=(\w+)", await server.wait_for_line(r"appId=\w+ key=\w+"))
    assert key is not None
    app_id, app_key = key.group(1), key.group(2)

    url = f"http://127.0.0.1:{port}"
    client, received = await _connected_client(url, "leads-management")
    try:
        async with http_client() as http:
            body = {"channel": "leads-management", "name": "lead.assigned",
                    "data": {"lead": {"id": 7}}}
            async def post_until_received() -> tuple:
                # The subscribe has no acknowledgement: post until the event comes back.
                while True:
                    async with http.post(f"{url}/apps/{app_id}/events",
                                         params={"auth_key": app_key}, json=body) as response:
                        assert response.status == 200
                        assert await response.json() == {"message": "ok"}
                    try:
                        return await asyncio.wait_for(received.get(), 0.2)
                    except TimeoutError:
                        continue
            event, args = await asyncio.wait_for(post_until_received(), 10)
        assert event == "lead.assigned"
        assert args == ("leads-management", {"lead": {"id": 7}})

        redis = RedisProcess(binary, redis_port, str(tmp_path))
        redis.start()
        try:
            await server.wait_for_line(r"is back after", timeout=15)
            import redis.asyncio as aioredis

            publisher = aioredis.Redis(port=redis_port)
            await publisher.publish("leads-management",
                                    laravel_message("admin.capacity.updated", {"admin": 5}))
            await publisher.aclose()
            event, args = await asyncio.wait_for(received.get(), 10)
            assert event == "admin.capacity.updated"
            assert args == ("leads-management", {"admin": 5, "socket": None})
        finally:
            redis.stop()
    finally:
        await client.disconnect()
    assert await server.stop() == 0


async def test_sigterm_closes_clients_and_releases_lock(tmp_path: Path, processes,
                                                        redis_url: str) -> None:
    port = free_port()
    from urllib.parse import urlsplit

    parts = urlsplit(redis_url)
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": port,
        "databaseConfig": {"redis": {"host": parts.hostname, "port": parts.port}},
        "clients": [{"appId": "a", "key": "k"}],
    }))
    server = ServerProcess(tmp_path, port, _env())
    processes.append(server)
    await server.start()
    lock = tmp_path / "laravel-echo-server.lock"
    assert json.loads(lock.read_text()) == {"process": server.proc.pid}

    async with http_client() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket",
                                   autoping=False)
        assert (await ws.receive_str()).startswith("0{")
        assert await ws.receive_str() == "40"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1001
    assert await server.stop() == 0
    assert time.monotonic() - started < 10
    assert not lock.exists()


async def test_https(tmp_path: Path, processes) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": port, "protocol": "https",
        "sslCertPath": str(cert), "sslKeyPath": str(key),
        "subscribers": {"http": True, "redis": False},
        "clients": [{"appId": "a", "key": "k"}],
    }))
    server = ServerProcess(tmp_path, port, _env())
    processes.append(server)
    await server.start()
    context = ssl.create_default_context(cafile=str(cert))
    async with http_client() as http:
        async with http.get(f"https://127.0.0.1:{port}/socket.io/?EIO=3&transport=polling",
                            ssl=context) as response:
            assert response.status == 200
            assert re.match(r'^\d+:0\{"sid":', await response.text())
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"https://127.0.0.1:{port}/", ssl=ssl.create_default_context())
    assert await server.stop() == 0


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_unchanged_reference_config_with_dotenv(tmp_path: Path, processes, redis_url: str,
                                                      node_client, redis) -> None:
    """A config exactly as `laravel-echo-server init` writes it, with `.env` overrides
    (including `${VAR}` indirection), serves an Echo 1 frontend and Laravel's prefix."""
    from tests.support.node_client import node_clients_available

    if not node_clients_available():
        pytest.skip("Node clients not installed")
    from urllib.parse import urlsplit

    port = free_port()
    redis_port = urlsplit(redis_url).port
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "authHost": "http://localhost",
        "authEndpoint": "/broadcasting/auth",
        "clients": [{"appId": "5b0e1c2d", "key": "e3f1a9"}],
        "database": "redis",
        "databaseConfig": {
            "redis": {"port": "6379", "host": "127.0.0.1", "keyPrefix": "laravel_database_"},
            "sqlite": {"databasePath": "/database/laravel-echo-server.sqlite"},
            "publishPresence": True,
        },
        "devMode": True,
        "host": None,
        "port": "6001",
        "protocol": "http",
        "socketio": {},
        "secureOptions": 67108864,
        "sslCertPath": "", "sslKeyPath": "", "sslCertChainPath": "", "sslPassphrase": "",
        "subscribers": {"http": True, "redis": True},
        "apiOriginAllow": {"allowCors": False, "allowOrigin": "", "allowMethods": "",
                           "allowHeaders": ""},
    }, indent="\t"))
    (tmp_path / ".env").write_text(
        f"ECHO_PORT={port}\nLARAVEL_ECHO_SERVER_PORT=${{ECHO_PORT}}\n"
        f"LARAVEL_ECHO_SERVER_HOST=127.0.0.1\nLARAVEL_ECHO_SERVER_REDIS_PORT={redis_port}\n")
    server = ServerProcess(tmp_path, port, _env())
    processes.append(server)
    await server.start()
    await server.wait_for_line(rf"listening on http://127\.0\.0\.1:{port}")

    client = await node_client("echo1-sio2", f"http://127.0.0.1:{port}")
    await client.expect("connected")
    await client.command({"cmd": "channel", "channel": "leads-management",
                          "listen": [".lead.assigned"]})
    await server.wait_for_line(r"DEBUG.*joined leads-management")  # devMode logs joins
    await redis.publish("laravel_database_leads-management",
                        laravel_message("lead.assigned", {"lead": {"id": 3}}))
    got = await client.expect("event", event=".lead.assigned")
    assert got["data"] == {"lead": {"id": 3}, "socket": None}
    async with http_client() as http, http.post(
            f"http://127.0.0.1:{port}/apps/5b0e1c2d/events?auth_key=e3f1a9",
            json={"channel": "leads-management", "name": "lead.assigned",
                  "data": {"lead": {"id": 4}}}) as response:
        assert response.status == 200
    got = await client.expect("event", event=".lead.assigned", data={"lead": {"id": 4}})
    assert await server.stop() == 0
