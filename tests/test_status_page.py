"""The status page: who may open it, ``/status.json`` following real traffic exactly, the page
itself in headless Chromium (numbers change live, no console errors, a screenshot kept in
``test-artifacts/``), and ``echo-server status`` against a running server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from broadcaster.event import BroadcastEvent
from echo_server.process.server import EchoServer
from echo_server.transport.engine import EngineServer
from tests.conftest import ROOT, free_port, laravel_message, server_url
from tests.support.auth_backend import AuthCall
from tests.support.drivers import CHROMIUM, NODE_DIR, browser_missing, stop_driver
from tests.support.http import http_client
from tests.support.raw import Polling, open_ws, ws_recv
from tests.support.seed_events import lead_assigned
from tests.support.waits import wait_until

PREFIX = "laravel_database_"
ARTIFACTS = ROOT / "test-artifacts"
# Raw test clients do not heartbeat; the page is watched for several seconds.
SLOW_PINGS = {"pingInterval": 25000, "pingTimeout": 20000}
HOSTILE = '<img src=x onerror="alert(1)">'


requires_browser = pytest.mark.skipif(browser_missing() is not None,
                                      reason=browser_missing() or "")


# --------------------------------------------------------------------------- helpers


async def ws_client(http: aiohttp.ClientSession, base: str, eio: int,
                    channels: list[str]) -> aiohttp.ClientWebSocketResponse:
    ws = await open_ws(http, base, eio)
    await ws_recv(ws)  # open
    if eio == 4:
        await ws.send_str("40")
    assert (await ws_recv(ws)).startswith("40")
    for channel in channels:
        await ws.send_str("42" + json.dumps(["subscribe", {"channel": channel}]))
    return ws


async def polling_client(http: aiohttp.ClientSession, base: str, eio: int,
                         channels: list[str]) -> Polling:
    client = Polling(http, base, eio)
    _, packets = await client.handshake()
    if eio == 4:
        await client.post("40")
    if not any(p.startswith("40") for p in packets):
        await client.get_until(lambda p: p.startswith("40"))
    for channel in channels:
        await client.post("42" + json.dumps(["subscribe", {"channel": channel}]))
    return client


async def get_json(http: aiohttp.ClientSession, server: EchoServer, **params: str) -> Any:
    async with http.get(f"{server_url(server)}/status.json",
                        params=params or {"auth_key": "test-key"}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("application/json")
        return await response.json()


def presence_per_socket() -> Any:
    """Every socket joins as its own user, so member counts are exact."""
    users = count(1)

    def answer(call: AuthCall) -> dict[str, Any]:
        n = next(users)
        return {"channel_data": {"user_id": n, "user_info": {"name": f"Admin {n}"}}}
    return answer


class StatusPageBrowser:
    """``tests/node/status_page.mjs``: the page in headless Chromium, spoken to in JSON lines."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc: asyncio.subprocess.Process | None = None
        self.problems: list[str] = []
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._ids = count(1)

    async def start(self) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(NODE_DIR / "status_page.mjs"), "--url", self.url,
            "--executable", str(CHROMIUM), cwd=str(NODE_DIR), limit=1 << 22,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        return await self._expect("ready", timeout=30)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            message = json.loads(raw)
            if message["type"] == "console_error":
                self.problems.append(message["text"])
            else:
                await self._replies.put(message)
        await self._replies.put({"type": "eof"})

    async def _expect(self, type_: str, timeout: float = 20) -> dict[str, Any]:
        message = await asyncio.wait_for(self._replies.get(), timeout)
        if message["type"] != type_:
            stderr = b""
            if message["type"] in ("fatal", "eof") and self.proc and self.proc.stderr:
                with contextlib.suppress(TimeoutError):
                    stderr = await asyncio.wait_for(self.proc.stderr.read(), 5)
            raise AssertionError(f"expected {type_}, got {message} {stderr.decode()[-2000:]}")
        return message

    async def command(self, reply: str, cmd: str, *, reply_timeout: float = 20,
                      **fields: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        line = json.dumps({"cmd": cmd, "id": next(self._ids), **fields}) + "\n"
        self.proc.stdin.write(line.encode())
        await self.proc.stdin.drain()
        return await self._expect(reply, reply_timeout)

    async def wait(self, seconds: float = 15, **spec: Any) -> dict[str, Any]:
        """Until the page shows ``spec``; fails with what it showed instead."""
        view = await self.command("waited", "wait", reply_timeout=seconds + 10,
                                  timeout=seconds * 1000, **spec)
        assert view["ok"], f"the page never showed {spec}; it showed {view}"
        return view

    async def close(self) -> None:
        await stop_driver(self.proc, self._reader)


@pytest.fixture
async def open_status_page() -> AsyncIterator[Any]:
    browsers: list[StatusPageBrowser] = []

    async def factory(url: str) -> tuple[StatusPageBrowser, dict[str, Any]]:
        browser = StatusPageBrowser(url)
        browsers.append(browser)
        return browser, await browser.start()

    try:
        yield factory
    finally:
        for browser in browsers:
            await browser.close()


# --------------------------------------------------------------------------- access


async def test_access_needs_an_app_key_or_the_metrics_token(make_server) -> None:
    server = await make_server({"metrics": {"token": "s3cret"}}, redis=False)
    base = server_url(server)
    async with http_client() as http:
        for path in ("/status", "/status.json"):
            for params, headers in (({}, {}), ({"auth_key": "wrong"}, {}),
                                    ({"token": ""}, {}), ({"auth_key": "test-app"}, {}),
                                    ({}, {"Authorization": "Bearer wrong"}),
                                    ({}, {"Authorization": "Basic test-key"})):
                async with http.get(base + path, params=params, headers=headers) as response:
                    assert response.status == 403, (path, params, headers)
                    body = await response.text()
                    if path == "/status.json":
                        assert json.loads(body) == {"error": "Unauthorized"}
                    else:
                        assert response.headers["Content-Type"].startswith("text/html")
                        assert "auth_key" in body
            for params, headers in (({"auth_key": "test-key"}, {}), ({"token": "s3cret"}, {}),
                                    ({}, {"Authorization": "Bearer test-key"}),
                                    ({}, {"Authorization": "bearer s3cret"})):
                async with http.get(base + path, params=params, headers=headers) as response:
                    assert response.status == 200, (path, params, headers)
                    assert response.headers["Cache-Control"] == "no-store"
                    assert response.headers["Referrer-Policy"] == "no-referrer"
        async with http.get(f"{base}/status", params={"auth_key": "test-key"}) as response:
            html = await response.text()
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp and "script-src 'sha256-" in csp
        assert "<title>echo-server status</title>" in html
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # no CDN
        script = html[html.index("<script>"):]
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in script  # data reaches the DOM through textContent only
        async with http.post(f"{base}/status.json", params={"auth_key": "test-key"}) as response:
            assert response.status == 405


async def test_without_a_metrics_token_only_app_keys_open_it(make_server) -> None:
    server = await make_server(redis=False)
    async with http_client() as http:
        async with http.get(f"{server_url(server)}/status.json",
                            params={"token": "anything"}) as response:
            assert response.status == 403
        await get_json(http, server)


# --------------------------------------------------------------------------- /status.json


async def test_json_follows_real_traffic_exactly(make_server, redis: aioredis.Redis,
                                                 auth_backend) -> None:
    auth_backend.rules["presence-admins"] = presence_per_socket()
    server = await make_server({"databaseConfig": {"redis": {"keyPrefix": PREFIX}},
                                "authHost": auth_backend.url, "socketio": SLOW_PINGS,
                                "metrics": {"sampleInterval": 100}})
    base = server_url(server)
    memory_events, redis_events = 4, 3
    async with http_client() as http:
        empty = await get_json(http, server)
        assert empty["connections"]["total"] == 0
        assert empty["channels"] == {"total": 0, "subscriptions": 0, "top": []}
        assert empty["sampleInterval"] == pytest.approx(0.1)

        clients = [
            await ws_client(http, base, 3, ["leads-management", "presence-admins"]),
            await ws_client(http, base, 4, ["leads-management", "presence-admins"]),
            await ws_client(http, base, 3, ["leads-management", "admin-capacity.5"]),
        ]
        await polling_client(http, base, 4, ["leads-management"])
        bad = await ws_client(http, base, 4, [])
        await bad.send_str("42garbage")  # closes that connection, counted as bad_frame
        await wait_until(lambda: server.core.rooms.count("leads-management") == 4
                         and server.core.rooms.count("presence-admins") == 2
                         and server.core.rooms.count("admin-capacity.5") == 1
                         and len(server.part(EngineServer).sessions) == 4, "subscriptions landed")

        for n in range(memory_events):
            assert server.publish(BroadcastEvent("leads-management", "lead.assigned",
                                                 json.dumps(lead_assigned(lead_id=n))))
        for n in range(redis_events):
            await redis.publish(PREFIX + "admin-capacity.5",
                                laravel_message("capacity.updated", {"n": n}))
        await redis.publish(PREFIX + "admin-capacity.5", "not json")
        await wait_until(lambda: server.core.fanout.delivered == memory_events * 4 + redis_events
                         and server.errors.counts.get("bad_json") == 1, "events delivered",
                         timeout=10)

        data = await get_json(http, server)
        assert data["connections"]["total"] == 4
        assert {(k["protocol"], k["transport"]): k["count"]
                for k in data["connections"]["byKind"]} == {
            ("eio3", "websocket"): 2, ("eio4", "websocket"): 1, ("eio4", "polling"): 1}
        assert data["totals"] == {"delivered": memory_events * 4 + redis_events,
                                  "events": memory_events + redis_events}
        assert data["rates"]["messagesPerSecond"] > 0
        assert data["rates"]["eventsPerSecond"] > 0
        assert data["channels"] == {"total": 3, "subscriptions": 7, "top": [
            {"name": "leads-management", "subscribers": 4},
            {"name": "presence-admins", "subscribers": 2},
            {"name": "admin-capacity.5", "subscribers": 1}]}
        assert data["presence"] == {"channels": 1, "memberships": 2, "top": [
            {"name": "presence-admins", "members": 2, "subscribers": 2}]}
        assert data["errors"] == {"bad_frame": 1, "bad_json": 1}
        sources = {s["kind"]: s for s in data["sources"]}
        assert sources["memory"]["events"] == memory_events
        assert sources["redis"]["events"] == redis_events
        assert sources["redis"]["connected"] is True
        assert sources["redis"]["outages"] == 0
        assert sources["redis"]["url"] == server.runners[1].health.url

        # The sampler's history: one point per 100 ms, the traffic visible in it.
        await asyncio.sleep(0.35)
        history = (await get_json(http, server))["history"]
        assert history["window"] == 600
        points = history["points"]
        assert len(points) >= 3
        assert all(p[0] <= 0 for p in points)
        assert [p[0] for p in points] == sorted(p[0] for p in points)
        assert points[-1][1] == 4
        assert max(p[2] for p in points) > 0 and max(p[3] for p in points) > 0

        await clients[0].close()
        await wait_until(lambda: len(server.part(EngineServer).sessions) == 3, "one client gone")
        for _ in range(100):  # leaving the presence store (Redis here) finishes a bit later
            data = await get_json(http, server)
            if data["presence"]["top"][0]["members"] == 1:
                break
            await asyncio.sleep(0.02)
        assert data["connections"]["total"] == 3
        assert data["presence"]["top"] == [
            {"name": "presence-admins", "members": 1, "subscribers": 1}]
        assert data["channels"]["top"][0] == {"name": "leads-management", "subscribers": 3}
        for ws in clients[1:]:
            await ws.close()


async def test_source_health_hides_the_redis_password(make_server) -> None:
    port = free_port()  # nothing listens there: the source stays down
    server = await make_server({"databaseConfig": {"redis": {
        "host": "127.0.0.1", "port": port, "password": "hunter2"}}}, wait_for_redis=False)
    async with http_client() as http:
        await wait_until(lambda: server.runners[-1].health.outages >= 1, "redis marked down")
        async with http.get(f"{server_url(server)}/status.json",
                            headers={"Authorization": "Bearer test-key"}) as response:
            text = await response.text()
    assert "hunter2" not in text
    redis_source = next(s for s in json.loads(text)["sources"] if s["kind"] == "redis")
    assert redis_source["connected"] is False
    assert redis_source["outages"] == 1
    assert redis_source["lastError"]


# --------------------------------------------------------------------------- the page


@requires_browser
async def test_page_in_headless_chromium(make_server, auth_backend, open_status_page) -> None:
    auth_backend.rules["presence-admins"] = presence_per_socket()
    server = await make_server({"authHost": auth_backend.url, "socketio": SLOW_PINGS,
                                "metrics": {"sampleInterval": 100}})
    base = server_url(server)
    page, view = await open_status_page(f"{base}/status?auth_key=test-key")
    assert view["figures"]["connections"] == "0"
    assert view["live"] == "Live"
    assert view["channels"] == {}

    n_clients = 4
    async with http_client() as http:
        clients = [
            await ws_client(http, base, 3, ["leads-management", "presence-admins"]),
            await ws_client(http, base, 4, ["leads-management", "presence-admins", HOSTILE]),
            await ws_client(http, base, 3, ["leads-management", "admin-capacity.5"]),
            await ws_client(http, base, 4, ["leads-management"]),
        ]
        bad = await ws_client(http, base, 3, [])
        await bad.send_str("42garbage")
        await wait_until(lambda: server.core.rooms.count("leads-management") == n_clients
                         and server.core.rooms.count("presence-admins") == 2
                         and len(server.part(EngineServer).sessions) == n_clients,
                         "clients subscribed")

        published = 0
        flowing = asyncio.Event()

        async def publish_while_watched() -> None:
            nonlocal published
            while not flowing.is_set():
                server.publish(BroadcastEvent("leads-management", "lead.assigned",
                                              json.dumps(lead_assigned(lead_id=published))))
                published += 1
                await asyncio.sleep(0.05)

        publisher = asyncio.create_task(publish_while_watched())
        try:
            view = await page.wait(
                figures={"connections": str(n_clients), "channels": "4", "subscriptions": "8",
                         "presence-members": "2", "errors": "1"},
                channels={"leads-management": str(n_clients), "presence-admins": "2",
                          HOSTILE: "1", "admin-capacity.5": "1"},
                presence={"presence-admins": "2"},
                nonzero=["messages-rate", "events-rate"])
            # A little history on the chart before the screenshot: a dozen more samples.
            enough = len(server.status_page.history) + 12
            await wait_until(lambda: len(server.status_page.history) >= enough,
                             "the chart has some history", timeout=10)
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-page.png"
            shot.unlink(missing_ok=True)
            await page.command("screenshot", "screenshot", path=str(shot))
        finally:
            flowing.set()
            await publisher
        assert view["errors"] == {"bad_frame": "1"}
        assert any("memory" in s and "connected" in s for s in view["sources"])
        assert any("redis" in s and "connected" in s for s in view["sources"])

        # Once the publisher stops, the page's totals settle on the server's exact figures.
        await wait_until(lambda: server.runners[0].health.events == published, "all delivered")
        assert server.core.fanout.delivered == published * n_clients
        await page.wait(figures={"delivered": f"{published * n_clients:,}",
                                 "events": f"{published:,}", "messages-rate": "0.0"})

        await clients[0].close()
        await page.wait(figures={"connections": str(n_clients - 1)},
                        channels={"leads-management": str(n_clients - 1)},
                        presence={"presence-admins": "1"})
        for ws in clients[1:]:
            await ws.close()
        await page.wait(figures={"connections": "0", "channels": "0"})

    errors = await page.command("errors", "errors")
    assert errors["errors"] == [] and page.problems == []
    assert shot.is_file() and shot.stat().st_size > 10_000


@requires_browser
async def test_page_without_credentials_is_refused_in_the_browser(make_server) -> None:
    server = await make_server(redis=False)
    page = StatusPageBrowser(f"{server_url(server)}/status")
    try:
        with pytest.raises(AssertionError, match="answered 403"):
            await page.start()
    finally:
        await page.close()


# --------------------------------------------------------------------------- the CLI


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "echo_server", *args, cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_cli_status_prints_the_running_servers_figures(make_server, tmp_path: Path) -> None:
    server = await make_server({"port": free_port(), "socketio": SLOW_PINGS}, redis=False)
    directory = Path(server.config.config_file).parent
    base = server_url(server)
    async with http_client() as http:
        clients = [await ws_client(http, base, 3, ["leads-management"]),
                   await ws_client(http, base, 4, ["leads-management", "bad\x1b[31mname"])]
        await wait_until(lambda: server.core.rooms.count("leads-management") == 2
                         and len(server.core.rooms.counts()) == 2, "subscribed")
        for n in range(3):
            server.publish(BroadcastEvent("leads-management", "lead.assigned",
                                          json.dumps({"n": n})))
        await wait_until(lambda: server.core.fanout.delivered == 6, "delivered")

        code, out, err = await _cli("status", "--dir", str(directory))
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith(f"echo-server at http://127.0.0.1:{server.port} (instance ")
        assert "Connections   2  (eio3 websocket 1, eio4 websocket 1)" in lines
        assert any(line.startswith("Messages/s") and "(6 delivered)" in line for line in lines)
        assert any(line.startswith("Events/s") and "(3 received)" in line for line in lines)
        assert "Channels      2  (3 subscriptions)" in lines
        assert any(line.split() == ["leads-management", "2"] for line in lines)
        assert "\x1b" not in out and "bad\\x1b[31mname" in out
        assert "Presence      0 members in 0 channels" in lines
        assert any(line.split()[:4] == ["memory", "memory://", "connected,", "3"] for line in lines)

        code, out, err = await _cli("status", "--dir", str(directory), "--json")
        assert code == 0, err
        assert json.loads(out)["connections"]["total"] == 2
        for ws in clients:
            await ws.close()

    port = free_port()  # a config whose server is not running
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "laravel-echo-server.json").write_text(
        json.dumps({"port": port, "clients": [{"appId": "a", "key": "k"}]}))
    code, out, err = await _cli("status", "--dir", str(tmp_path / "stopped"))
    assert code == 1
    assert f"echo-server is not running at http://127.0.0.1:{port} (connection refused)" in err

    (tmp_path / "nokey").mkdir()
    (tmp_path / "nokey" / "laravel-echo-server.json").write_text(
        json.dumps({"port": free_port(), "clients": []}))
    code, out, err = await _cli("status", "--dir", str(tmp_path / "nokey"))
    assert code == 1 and "no API client key or metrics.token" in err
