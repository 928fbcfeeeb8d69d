"""`echo-server start --workers 2` as a real process: one port, each client address always on
the same worker (so polling works without a proxy), the workers one cluster over Redis, a
killed worker restarted into its slot, SIGTERM stopping them all; refused without Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port, redis_config
from tests.support.logged_process import LoggedProcess
from tests.support.raw import Polling, http_request, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="workers need SO_REUSEPORT with a BPF program (Linux)")
ADDRESSES = [f"127.0.0.{n}" for n in range(1, 9)]


def start(directory: Path, options: dict[str, Any], *args: str) -> LoggedProcess:
    (directory / "laravel-echo-server.json").write_text(json.dumps(options))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LARAVEL_ECHO_SERVER_",
                                                                      "ECHO_"))}
    return LoggedProcess([sys.executable, "-m", "echo_server", "start", "--dir",
                          str(directory), *args], cwd=directory,
                         env={**env, "PYTHONUNBUFFERED": "1"})


def session_from(address: str) -> aiohttp.ClientSession:
    """Every request on a new connection from ``address``: stickiness must not depend on
    keep-alive."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0),
                                                                force_close=True))


async def instance_of(http: aiohttp.ClientSession, base: str) -> str:
    reply = await http_request(http, "GET", f"{base}/readyz")
    assert reply.status == 200
    return str(reply.json()["instance"])


async def eventually(read: Callable[[], Awaitable[int]], expected: int,
                     timeout: float = 10.0) -> None:
    """Until ``read`` answers ``expected`` (the cluster's figures follow its heartbeats)."""
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        assert time.monotonic() < deadline, f"still {value}, not {expected}"
        await asyncio.sleep(0.05)


async def test_two_workers_sticky_by_address_one_cluster(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    server = start(tmp_path, {
        "host": "127.0.0.1", "port": port, "clients": [{"appId": "app", "key": "key"}],
        "instanceId": "echo",
        "cluster": {"heartbeatInterval": 100, "livenessTtl": 1000}, **redis_config(redis_url),
    }, "--workers", "2")
    await server.start()
    base = f"http://127.0.0.1:{port}"
    sessions = {address: session_from(address) for address in ADDRESSES}
    try:
        await server.wait_for_line(r"2 workers serving port")
        await wait_until(lambda: sum("listening on" in line for line in server.lines) == 2,
                         15, "both workers listening")

        # Each address lands on one worker, whatever the connection; both workers are used.
        worker_of: dict[str, str] = {}
        for address, http in sessions.items():
            seen = {await instance_of(http, base) for _ in range(4)}
            assert len(seen) == 1, (address, seen)
            worker_of[address] = seen.pop()
        assert set(worker_of.values()) == {"echo-w0", "echo-w1"}

        # Polling clients: every poll on a new connection reaches the session's worker.
        clients = []
        for http in sessions.values():
            client = Polling(http, base, eio=4)
            await client.handshake()
            await client.post("40")
            await client.get_until(lambda p: p.startswith("40"))
            await client.post('42["subscribe",{"channel":"news"}]')
            clients.append(client)

        # The workers are one cluster: either one reports every subscriber.
        async def subscribers(http: aiohttp.ClientSession) -> int:
            reply = await http_request(http, "GET", f"{base}/apps/app/channels/news",
                                       params={"auth_key": "key"})
            return int(reply.json()["subscription_count"])

        for http in (sessions["127.0.0.1"], sessions["127.0.0.2"]):
            await eventually(lambda http=http: subscribers(http), len(ADDRESSES))
        for client in clients:  # still their sessions: no "Session ID unknown"
            await client.post('42["subscribe",{"channel":"more-news"}]')

        # A killed worker is started again in its slot: its addresses come back to it.
        assert server.proc is not None
        slot = int(worker_of["127.0.0.1"].rsplit("-w", 1)[1])
        started = await server.wait_for_line(rf"worker {slot} started \(process \d+\)")
        os.kill(int(started.rsplit("process ", 1)[1].rstrip(")")), signal.SIGKILL)
        await server.wait_for_line(rf"worker {slot} \(process \d+\) exited with -9; starting "
                                   r"it again in its slot")
        await wait_until(lambda: sum("listening on" in line for line in server.lines) == 3,
                         15, "the worker listening again")
        for address, http in sessions.items():
            assert await instance_of(http, base) == worker_of[address]

        assert await server.stop(20) == 0
        assert not (tmp_path / "laravel-echo-server.lock").exists()
    finally:
        for http in sessions.values():
            await http.close()
        await server.kill()


@pytest.mark.parametrize("database", ["sqlite", "unreachable"])
async def test_more_than_one_worker_needs_redis(tmp_path: Path, database: str) -> None:
    options: dict[str, Any] = {"host": "127.0.0.1", "port": free_port()}
    if database == "sqlite":
        options["database"] = "sqlite"
    else:
        options.update(redis_config(f"redis://127.0.0.1:{free_port()}/0"))
    server = start(tmp_path, options, "--workers", "2")
    await server.start()
    assert await server.wait_exit() == 1
    output = "\n".join(server.lines)
    assert "workers: 2 needs" in output and "run one worker" in output
    assert not (tmp_path / "laravel-echo-server.lock").exists()
