"""`echo-server start --workers 2` as a real process: one port, each client address always on
the same worker (so polling works without a proxy), the workers one cluster over Redis, a
killed worker restarted into its slot, SIGTERM stopping them all; refused without Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from broadcaster import Broadcaster
from echo_server.apps.quota import SharedAppQuota
from echo_server.core.presence import key_tag
from tests.conftest import FAST_SOCKETIO, free_port, redis_config, requires_node
from tests.support.auth_backend import AuthBackend
from tests.support.http import http_client
from tests.support.logged_process import LoggedProcess
from tests.support.raw import Polling, RawWebSocket, http_request, wait_until
from tests.support.waits import ClientFactory
from tests.test_pusher_ws import _At
from tests.test_redis_topologies import _all_get, _as_member, _member, readme_nginx_config

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
    return http_client(connector=aiohttp.TCPConnector(local_addr=(address, 0),
                                                                force_close=True))


async def instance_of(http: aiohttp.ClientSession, base: str) -> str:
    reply = await http_request(http, "GET", f"{base}/readyz")
    assert reply.status == 200
    return str(reply.json()["instance"])


async def workers_of(clients: dict[str, aiohttp.ClientSession], base: str) -> dict[str, str]:
    """Which worker each client address lands on: always the same one (asked four times,
    each on a new connection), and both workers are used."""
    worker_of: dict[str, str] = {}
    for address, http in clients.items():
        seen = {await instance_of(http, base) for _ in range(4)}
        assert len(seen) == 1, (address, seen)
        worker_of[address] = seen.pop()
    assert set(worker_of.values()) == {"echo-w0", "echo-w1"}
    return worker_of


async def subscribers(http: aiohttp.ClientSession, base: str, channel: str) -> int:
    """The channel's subscribers as the HTTP API reports them (the whole cluster's)."""
    reply = await http_request(http, "GET", f"{base}/apps/app/channels/{channel}",
                               params={"auth_key": "key"})
    return int(reply.json()["subscription_count"])


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
        worker_of = await workers_of(sessions, base)

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
        for http in (sessions["127.0.0.1"], sessions["127.0.0.2"]):
            await eventually(lambda http=http: subscribers(http, base, "news"), len(ADDRESSES))
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


async def started_workers(tmp_path: Path, redis_url: str, prefix: str, *args: str,
                          **options: Any) -> tuple[LoggedProcess, int]:
    """``--workers 2`` on a free port, both workers listening, Laravel's prefix ``prefix``."""
    port = free_port()
    server = start(tmp_path, {
        "host": "127.0.0.1", "port": port, "clients": [{"appId": "app", "key": "key"}],
        "instanceId": "echo", "cluster": {"heartbeatInterval": 100, "livenessTtl": 1000},
        **redis_config(redis_url, keyPrefix=prefix), **options}, "--workers", "2", *args)
    await server.start()
    await server.wait_for_line(r"2 workers serving port")
    await wait_until(lambda: sum("listening on" in line for line in server.lines) == 2,
                     15, "both workers listening")
    return server, port


async def addresses_by_worker(base: str) -> dict[str, list[str]]:
    """The client addresses of ``ADDRESSES`` each worker gets (asked of the server)."""
    found: dict[str, list[str]] = {}
    for address in ADDRESSES:
        async with session_from(address) as http:
            found.setdefault(await instance_of(http, base), []).append(address)
    assert set(found) == {"echo-w0", "echo-w1"}, found
    return found


def samples(text: str, name: str) -> dict[str, float]:
    """``name``'s samples by worker (summed over the other labels), from one exposition that
    must hold each family once."""
    families = [f for f in text_string_to_metric_families(text) if f.name == name]
    assert len(families) == 1, f"{name}: {len(families)} families"
    by_worker: dict[str, float] = {}
    for sample in families[0].samples:
        by_worker[sample.labels["worker"]] = (by_worker.get(sample.labels["worker"], 0)
                                              + sample.value)
    return by_worker


async def test_metrics_and_status_page_show_every_worker(tmp_path: Path,
                                                         redis_url: str) -> None:
    prefix = f"figures_{secrets.token_hex(3)}_"
    server, port = await started_workers(tmp_path, redis_url, prefix)
    base = f"http://127.0.0.1:{port}"
    http_of = {address: session_from(address) for address in ADDRESSES}
    try:
        by_worker = await addresses_by_worker(base)
        clients = {}
        for address, http in http_of.items():  # one polling client per address, on "news"
            client = Polling(http, base, eio=4)
            await client.handshake()
            await client.post("40")
            await client.get_until(lambda p: p.startswith("40"))
            await client.post('42["subscribe",{"channel":"news"}]')
            clients[address] = client
        api = http_of[ADDRESSES[0]]
        await eventually(lambda: subscribers(api, base, "news"), len(ADDRESSES))
        async with Broadcaster(f"{redis_url}?prefix={prefix}") as laravel:
            await laravel.publish("news", "posted", {"n": 1})
        for client in clients.values():
            await client.get_until(lambda p: '"posted"' in p)

        # Scraped through either worker: both workers' figures, each labelled with its own.
        per_worker = {f"{slot}": len(by_worker[f"echo-w{slot}"]) for slot in (0, 1)}
        for worker, addresses in sorted(by_worker.items()):
            reply = await http_request(http_of[addresses[0]], "GET", f"{base}/metrics")
            text = reply.text
            assert samples(text, "echo_worker_up") == {"0": 1.0, "1": 1.0}, worker
            assert samples(text, "echo_connections") == per_worker
            assert samples(text, "echo_subscriptions") == per_worker
            assert samples(text, "echo_messages_delivered") == per_worker
            assert set(samples(text, "process_cpu_seconds")) == {"0", "1"}

            # The status page: the whole server's figures, and the workers listed.
            reply = await http_request(http_of[addresses[0]], "GET", f"{base}/status.json",
                                       params={"auth_key": "key"})
            status = reply.json()
            assert status["instance"] == worker
            assert status["connections"]["total"] == len(ADDRESSES)
            assert status["totals"]["delivered"] == len(ADDRESSES)
            assert status["channels"]["top"] == [{"name": "news",
                                                  "subscribers": len(ADDRESSES)}]
            # "news", which both workers hold, is one channel of the app, as in the total.
            assert status["apps"] == [{"id": "", "connections": len(ADDRESSES), "channels": 1,
                                       "subscriptions": len(ADDRESSES)}]
            assert [(w["worker"], w["up"], w["connections"]) for w in status["workers"]] == [
                (0, True, per_worker["0"]), (1, True, per_worker["1"])]
            assert sorted({s["worker"] for s in status["sources"]}) == [0, 1]

        # A worker that does not answer is reported, and the scrape still answers.
        assert server.proc is not None
        stuck = int((await server.wait_for_line(r"worker 1 started \(process \d+\)"))
                    .rsplit("process ", 1)[1].rstrip(")"))
        os.kill(stuck, signal.SIGSTOP)
        try:
            reply = await http_request(http_of[by_worker["echo-w0"][0]], "GET",
                                       f"{base}/metrics")
            assert samples(reply.text, "echo_worker_up") == {"0": 1.0, "1": 0.0}
            assert set(samples(reply.text, "echo_connections")) == {"0"}
        finally:
            os.kill(stuck, signal.SIGCONT)
        assert await server.stop(20) == 0
    finally:
        for http in http_of.values():
            await http.close()
        await server.kill()


async def test_behind_nginx_worker_ports_spread_clients(tmp_path: Path, redis_url: str,
                                                        nginx: Any) -> None:
    """nginx connects from one address, which the shared port would put on one worker: the
    README's upstream lists the workers' own ports (`--worker-ports`) and hashes the client
    address it reports, so clients spread over the workers and each stays on one."""
    prefix = f"proxied_{secrets.token_hex(3)}_"
    ports = [free_port(), free_port()]
    server, _ = await started_workers(tmp_path, redis_url, prefix, "--worker-ports",
                                      ",".join(map(str, ports)), trustedProxies=["127.0.0.1"])
    listen = free_port()
    nginx(readme_nginx_config(ports, listen, tmp_path / "access.log"), listen)
    base = f"http://127.0.0.1:{listen}"
    browsers = {address: http_client(headers={"X-Forwarded-For": address})
                for address in (f"198.51.100.{n}" for n in range(1, 9))}
    try:
        for slot, port in enumerate(ports):
            await server.wait_for_line(rf"worker {slot} also serves port {port}")
        await workers_of(browsers, base)  # sticky by the forwarded address, both used

        clients = []
        for http in browsers.values():  # polling through nginx: each poll on its worker
            client = Polling(http, base, eio=3)
            await client.handshake()
            await client.post('42["subscribe",{"channel":"news"}]')
            clients.append(client)
        await eventually(lambda: subscribers(next(iter(browsers.values())), base, "news"),
                         len(browsers))
        async with Broadcaster(f"{redis_url}?prefix={prefix}") as laravel:
            await laravel.publish("news", "posted", {"n": 1})
        for client in clients:
            await client.get_until(lambda p: '"posted"' in p)
        assert await server.stop(20) == 0
    finally:
        for http in browsers.values():
            await http.close()
        await server.kill()


async def figure(http: aiohttp.ClientSession, base: str, read: Callable[[Any], int]) -> int:
    reply = await http_request(http, "GET", f"{base}/status.json", params={"auth_key": "key"})
    return read(reply.json())


def transports(status: Any, transport: str) -> int:
    return sum(k["count"] for k in status["connections"]["byKind"]
               if k["transport"] == transport)


@requires_node
async def test_both_client_generations_from_several_addresses(
        tmp_path: Path, redis_url: str, node_client: ClientFactory,
        auth_backend: AuthBackend) -> None:
    """Echo 1 and 2 on socket.io-client 2 and 4, polling, polling upgraded to websocket and
    websocket, from addresses on both workers: every poll and upgrade reaches the session's
    worker (nobody disconnected, so nobody got `Session ID unknown`), and presence,
    broadcasts and whispers span the workers."""
    auth_backend.rules["presence-room"] = _as_member
    prefix = f"clients_{secrets.token_hex(3)}_"
    server, port = await started_workers(tmp_path, redis_url, prefix,
                                         authHost=auth_backend.url, socketio=FAST_SOCKETIO)
    base = f"http://127.0.0.1:{port}"
    http = http_client()
    try:
        by_worker = await addresses_by_worker(base)
        w0, w1 = by_worker["echo-w0"], by_worker["echo-w1"]
        assert len(w0) >= 2 and len(w1) >= 3, by_worker
        plan = [("echo1-sio2", "polling", w0[0]), ("echo2-sio4", "polling,websocket", w1[0]),
                ("echo2-sio2", "polling,websocket", w0[1]), ("echo2-sio4", "websocket", w1[1]),
                ("echo2-sio4", "polling", w1[2])]
        clients = []
        for user, (stack, transport, address) in enumerate(plan, start=1):
            client, _, here = await _member(node_client, base, stack, user,
                                            transports=transport, local_address=address)
            clients.append(client)
        assert here == [f"user {n}" for n in range(1, len(plan) + 1)]  # across both workers

        # The upgrades went through: 3 websockets (2 upgraded), 2 polling, on the two workers.
        await eventually(lambda: figure(http, base, lambda s: transports(s, "websocket")), 3)
        assert await figure(http, base, lambda s: transports(s, "polling")) == 2
        async with Broadcaster(f"{redis_url}?prefix={prefix}") as laravel:
            await laravel.publish("news", "news.posted", {"n": 1})
            await _all_get(clients, 1)
            await clients[1].command({"cmd": "whisper", "channel": "room", "event": "typing",
                                      "data": {"b": 1}})
            assert (await clients[0].expect("whisper", event="typing"))["data"] == {"b": 1}
            await laravel.publish("news", "news.posted", {"n": 2})  # after more polls
            await _all_get(clients, 2)
        for client in clients:
            assert not [m for m in client.history
                        if m.get("type") in ("disconnected", "connect_error")], client.stack
        assert await server.stop(20) == 0
    finally:
        await http.close()
        await server.kill()


@requires_node
async def test_a_killed_workers_members_are_announced_leaving(
        tmp_path: Path, redis_url: str, node_client: ClientFactory,
        auth_backend: AuthBackend) -> None:
    """kill -9 of a worker: the other worker's clients hear its presence members leave (here
    they do not come back: the tabs were closed with it), and the API lists them no more."""
    auth_backend.rules["presence-room"] = _as_member
    prefix = f"killed_{secrets.token_hex(3)}_"
    server, port = await started_workers(tmp_path, redis_url, prefix,
                                         authHost=auth_backend.url, socketio=FAST_SOCKETIO)
    base = f"http://127.0.0.1:{port}"
    http = http_client()
    try:
        by_worker = await addresses_by_worker(base)
        observer, _, _ = await _member(node_client, base, "echo2-sio4", 1,
                                       local_address=by_worker["echo-w0"][0])
        for user, (stack, transport) in enumerate((("echo1-sio2", "polling"),
                                                   ("echo2-sio4", "websocket")), start=2):
            await _member(node_client, base, stack, user, transports=transport,
                          local_address=by_worker["echo-w1"][user - 2], reconnection=False)
        for user in (2, 3):
            await observer.expect("presence_joining", user={"name": f"user {user}"})

        started = await server.wait_for_line(r"worker 1 started \(process \d+\)")
        os.kill(int(started.rsplit("process ", 1)[1].rstrip(")")), signal.SIGKILL)
        for user in (2, 3):
            await observer.expect("presence_leaving", timeout=10,
                                  user={"name": f"user {user}"})

        async def members() -> int:
            reply = await http_request(http, "GET", f"{base}/apps/app/channels/presence-room/"
                                       "users", params={"auth_key": "key"})
            return len(reply.json()["users"])

        await eventually(members, 1)
        assert await server.stop(20) == 0
    finally:
        await http.close()
        await server.kill()


async def heartbeats_after(redis: aioredis.Redis, prefix: str, since: float) -> None:
    """Until each worker has finished a cluster heartbeat begun after ``since``: its next
    one has written its liveness key (which says when a beat began)."""
    for slot in (0, 1):
        key = f"{key_tag(prefix)}:alive:echo-w{slot}"
        deadline = time.monotonic() + 10
        seen = since
        for _ in range(2):  # a beat begun after `since`, then the one after it
            while (begun := float(await redis.get(key) or 0)) <= seen:
                assert time.monotonic() < deadline, f"worker {slot} stopped beating"
                await asyncio.sleep(0.02)
            seen = begun


async def _pusher_connect(port: int, address: str) -> tuple[RawWebSocket, int | None]:
    """A Pusher connection to the app ``pusher-key`` from ``address``: the socket and None
    when established, else the code of its refusal."""
    ws = await RawWebSocket.connect(_At(port), "protocol=7", path="/app/pusher-key",
                                    local_addr=(address, 0))
    first = json.loads(await ws.recv_text())
    if first["event"] == "pusher:connection_established":
        return ws, None
    await ws.close()
    return ws, int(first["data"]["code"])


async def test_an_apps_max_connections_hold_across_workers(tmp_path: Path, redis_url: str,
                                                           redis: aioredis.Redis) -> None:
    """maxConnections 30 is 30 over both workers (it was 30 per worker), and no address takes
    more than its share: a quarter, here 8 (4100, which pusher-js retries later). Each worker
    tells the cluster its own connections for the other instances, which its sibling never
    adds to those it counts exactly already: one slot given back is free on the other."""
    prefix = f"quota_{secrets.token_hex(3)}_"
    server, port = await started_workers(tmp_path, redis_url, prefix, clients=[
        {"appId": "app", "key": "key"},
        {"appId": "1001", "key": "pusher-key", "secret": "pusher-secret",
         "maxConnections": 30}])
    opened: list[RawWebSocket] = []
    try:
        by_worker = await addresses_by_worker(f"http://127.0.0.1:{port}")
        refusals: dict[str, list[int]] = {}
        for address in ADDRESSES:  # 8 addresses, 10 attempts each, on both workers
            for _ in range(10):
                ws, refused = await _pusher_connect(port, address)
                if refused is None:
                    opened.append(ws)
                else:
                    refusals.setdefault(address, []).append(refused)
        assert len(opened) == 30
        assert refusals[ADDRESSES[0]] == [4100, 4100]  # its share taken: 8 of 30
        assert sum(map(len, refusals.values())) == 80 - 30
        assert all(code == 4004 for address in ADDRESSES[4:] for code in refusals[address])
        # Both workers told the cluster theirs, and each heard the other's since: a slot one
        # gives back is free on the other all the same.
        keys = [f"{key_tag(prefix)}:counts:echo-w{slot}" for slot in (0, 1)]

        async def reported() -> int:
            return sum(json.loads(value or "{}").get("pusher-key", 0)
                       for value in await redis.mget(keys))

        await eventually(reported, 30)
        await heartbeats_after(redis, prefix, time.time())
        worker_of = {a: w for w, addresses in by_worker.items() for a in addresses}
        held = {a: 10 - len(refusals.get(a, [])) for a in ADDRESSES}
        other = next(a for a in ADDRESSES
                     if worker_of[a] != worker_of[ADDRESSES[0]] and held[a] < 8)
        await opened[0].close()  # ADDRESSES[0]'s
        deadline = time.monotonic() + 10
        while (attempt := await _pusher_connect(port, other))[1] is not None:
            assert time.monotonic() < deadline, "the slots never came back"
            await asyncio.sleep(0.05)  # until its worker saw the closes
        opened.append(attempt[0])
        assert await server.stop(20) == 0
    finally:
        for ws in opened:
            await ws.close()
        await server.kill()


def test_a_restarted_worker_gives_back_what_its_previous_life_held(tmp_path: Path) -> None:
    """The counts of one bound over two worker slots; a worker started again into its slot
    holds nothing (its connections died with it), the other keeps what it holds."""
    first, second = SharedAppQuota(str(tmp_path), 0, 2), SharedAppQuota(str(tmp_path), 1, 2)
    assert [first.take("app", 3), second.take("app", 3), first.take("app", 3)] == [True] * 3
    assert not second.take("app", 3) and not first.take("app", 3)
    first.give("app")
    assert second.take("app", 3) and not first.take("app", 3)  # one bound: 1 + 2
    restarted = SharedAppQuota(str(tmp_path), 0, 2)  # slot 0 killed and forked again
    assert restarted.take("app", 3) and not restarted.take("app", 3)  # second's 2 stay
