"""`/healthz` and `/readyz` as an orchestrator sees them: with Redis up, with Redis gone (still
ready: the body says what is down), while starting against a Redis that hangs, and while a
real process drains after SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from echo_server.config import load_config
from echo_server.process.server import EchoServer
from tests.conftest import free_port, private_redis, redis_config, server_url
from tests.support.http import http_client
from tests.support.logged_process import LoggedProcess
from tests.support.raw import Reply, http_request, open_ws, wait_until, ws_closed, ws_recv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as session:
        yield session


async def probe(http: aiohttp.ClientSession, base: str, path: str) -> Reply:
    reply = await http_request(http, "GET", base + path)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["Cache-Control"] == "no-store"
    return reply


def source(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(s for s in body["sources"] if s["kind"] == kind)


def redis_up(server: EchoServer) -> bool:
    return next(s.connected for s in server.state.sources() if s.kind == "redis")


async def test_ready_with_redis_up_no_credential_needed(make_server, http, redis_url) -> None:
    server = await make_server()
    base = server_url(server)
    live = await probe(http, base, "/healthz")
    assert (live.status, live.json()) == (200, {"status": "ok", "phase": "serving"})
    ready = await probe(http, base, "/readyz")
    assert ready.status == 200
    body = ready.json()
    assert body["status"] == "serving"
    assert body["instance"] == server.instance_id
    assert source(body, "memory")["connected"] is True
    redis = source(body, "redis")
    assert redis["connected"] is True and redis["lastError"] is None
    assert redis["url"].startswith(redis_url.rsplit("/", 1)[0])
    assert body["presence"] == "redis"
    assert body["cluster"]["reachable"] is True and body["cluster"]["instances"] >= 1
    assert body["recovery"] == "off"  # connectionStateRecovery is not set
    # Only GET and HEAD: anything else is the API's 404, as for any unknown route.
    assert (await http_request(http, "POST", base + "/readyz")).status == 404


async def test_redis_gone_is_in_the_body_not_the_status(make_server, http) -> None:
    """A Redis outage leaves the instance ready (it still serves its clients and the HTTP
    API's bus); the body says the source is down and the cluster unreachable, and both
    come back when Redis does."""
    with private_redis() as redis_process:
        server = await make_server({**redis_config(redis_process.url),
                                    "health": {"checkTimeout": 200}})
        base = server_url(server)
        redis_process.stop()
        await wait_until(lambda: not redis_up(server), 5,
                         "the redis source noticed the outage")
        ready = await probe(http, base, "/readyz")
        assert ready.status == 200
        body = ready.json()
        assert body["status"] == "serving"
        assert source(body, "redis")["connected"] is False
        assert source(body, "redis")["lastError"]
        assert source(body, "memory")["connected"] is True
        assert body["cluster"]["reachable"] is False and body["cluster"]["error"]
        assert (await probe(http, base, "/healthz")).status == 200
        # Still serving the in-memory bus meanwhile.
        posted = await http_request(
            http, "POST", base + "/apps/test-app/events", params={"auth_key": "test-key"},
            json={"channel": "news", "name": "e", "data": {"x": 1}})
        assert posted.status == 200

        redis_process.start()
        await wait_until(lambda: redis_up(server), 10,
                         "the redis source reconnected")
        body = (await probe(http, base, "/readyz")).json()
        assert source(body, "redis")["connected"] is True
        assert body["cluster"]["reachable"] is True


async def test_not_ready_while_starting(tmp_path: Path, http, monkeypatch) -> None:
    """Start-up waits for Redis to answer (presence); until it is done, /readyz is 503
    "starting" and /healthz 200, and the client bundle is served (a page loads it before it
    connects). Here Redis accepts the connection and says nothing, until the connection
    drops: then the server serves with presence in memory, and is ready."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "socket.io.js").write_text("/*! socket.io-client v2.5.0 */ var io;")
    monkeypatch.setenv("ECHO_SERVER_STATIC_DIR", str(static))
    held: list[asyncio.StreamWriter] = []
    accepted = asyncio.Event()

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    silent_redis = await asyncio.start_server(silent, "127.0.0.1", 0)
    redis_port = silent_redis.sockets[0].getsockname()[1]
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": 0, "clients": [{"appId": "a", "key": "k"}],
        "subscribers": {"http": True, "redis": False},
        **redis_config(f"redis://127.0.0.1:{redis_port}/0")}))
    config = load_config("laravel-echo-server.json", str(tmp_path), environ={},
                         cwd=str(tmp_path))
    server = EchoServer(config)
    starting = asyncio.create_task(server.start())
    try:
        await asyncio.wait_for(accepted.wait(), 5)
        base = server_url(server)
        ready = await probe(http, base, "/readyz")
        assert (ready.status, ready.json()["status"]) == (503, "starting")
        live = await probe(http, base, "/healthz")
        assert (live.status, live.json()["phase"]) == (200, "starting")
        # No client in before presence is set up (a restarted instance purges its previous
        # life's members then): socket.io-client retries on its reconnect backoff.
        handshake = await http_request(http, "GET", base + "/socket.io/?EIO=4&transport=polling")
        assert (handshake.status, handshake.json()) == (503, {"error": "starting"})
        bundle = await http_request(http, "GET", base + "/socket.io/socket.io.js")
        assert bundle.status == 200

        for writer in held:
            writer.close()
        await asyncio.wait_for(starting, 10)
        ready = await probe(http, base, "/readyz")
        assert ready.status == 200
        assert ready.json()["presence"] == "memory" and ready.json()["cluster"] is None
        handshake = await http_request(http, "GET", base + "/socket.io/?EIO=4&transport=polling")
        assert handshake.status == 200
    finally:
        if not starting.done():
            starting.cancel()
        await server.stop(timeout=2)
        silent_redis.close()


async def test_draining_process_answers_503_then_closes(tmp_path: Path, http,
                                                        redis_url: str) -> None:
    """SIGTERM: /readyz turns 503 "draining" for health.drainDelay while connected clients
    (of every protocol: the log counts them all) stay connected and /healthz stays 200; then
    the clients are closed and the process exits 0 with its lock released."""
    port = free_port()
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": port,
        "clients": [{"appId": "a", "key": "k"}, {"appId": "p", "key": "pk", "secret": "s"}],
        "health": {"drainDelay": 1500}, **redis_config(redis_url)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LARAVEL_ECHO_SERVER_")}
    process = LoggedProcess([sys.executable, "-m", "echo_server", "start", "--dir",
                             str(tmp_path)], cwd=tmp_path, env={**env, "PYTHONUNBUFFERED": "1"})
    await process.start()
    try:
        await process.wait_for_line("listening on")
        base = f"http://127.0.0.1:{port}"
        assert (await probe(http, base, "/readyz")).status == 200
        ws = await open_ws(http, base, eio=3)
        assert (await ws_recv(ws)).startswith("0{")
        assert await ws_recv(ws) == "40"
        pusher = await http.ws_connect(f"ws://127.0.0.1:{port}/app/pk?protocol=7")
        established = await asyncio.wait_for(pusher.receive_json(), 5)
        assert established["event"] == "pusher:connection_established"

        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        await process.wait_for_line(r"draining: /readyz answers 503 for 1\.5 s before 2 "
                                    r"connections")
        ready = await probe(http, base, "/readyz")
        assert (ready.status, ready.json()["status"]) == (503, "draining")
        live = await probe(http, base, "/healthz")
        assert (live.status, live.json()["phase"]) == (200, "draining")
        assert not ws.closed and not pusher.closed

        await ws_closed(ws, timeout=5)
        assert ws.close_code == 1001
        closing = await asyncio.wait_for(pusher.receive(), 5)
        if closing.type is aiohttp.WSMsgType.TEXT:  # "Server shutting down: reconnect" first
            closing = await asyncio.wait_for(pusher.receive(), 5)
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
        assert await process.wait_exit(10) == 0
        assert not (tmp_path / "laravel-echo-server.lock").exists()
    finally:
        await process.kill()


async def test_a_redis_that_never_answers_does_not_hold_the_start(tmp_path: Path,
                                                                  http) -> None:
    """After health.checkTimeout the server serves with presence in memory."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent_redis = await asyncio.start_server(silent, "127.0.0.1", 0)
    redis_port = silent_redis.sockets[0].getsockname()[1]
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": 0, "clients": [{"appId": "a", "key": "k"}],
        "subscribers": {"http": True, "redis": False}, "health": {"checkTimeout": 200},
        **redis_config(f"redis://127.0.0.1:{redis_port}/0")}))
    server = EchoServer(load_config("laravel-echo-server.json", str(tmp_path), environ={},
                                    cwd=str(tmp_path)))
    try:
        await asyncio.wait_for(server.start(), 5)
        ready = await probe(http, server_url(server), "/readyz")
        assert (ready.status, ready.json()["presence"]) == (200, "memory")
    finally:
        await server.stop(timeout=2)
        for writer in held:
            writer.close()
        silent_redis.close()


async def test_recovery_is_this_instances_while_redis_did_not_answer_at_start(
        make_server, http) -> None:
    """Recovery on any instance configured (the cluster, a redis-stream:// source as the only
    one), but Redis did not answer at start (a closed port): the shared sessions are built,
    yet this instance is not in the cluster, so a dropped client recovers here only."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    server = await make_server({
        **redis_config(closed), "database": "redis", "health": {"checkTimeout": 200},
        "sources": [closed.replace("redis://", "redis-stream://", 1) + "?stream=s&block=0.2"],
        "socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 10_000}}},
        wait_for_redis=False)
    assert server.core.shared is not None  # what recovery on any instance is made of
    body = (await probe(http, server_url(server), "/readyz")).json()
    assert (body["status"], body["presence"], body["recovery"]) == ("serving", "memory",
                                                                    "instance")
