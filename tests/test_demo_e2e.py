"""The lead-management demo end to end: the built Vue page (clients/js) served at ``/demo``, its
backend publishing through ``broadcaster``, two admins in two Chromium contexts, and echo-server
stopped and started under them. Also ``echo-server demo`` run as a user would, and the ``/demo``
route's file serving.

Screenshots of each step are kept in ``test-artifacts/demo-*.png``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from echo_server.adapters.pusher.apps import signed_in_user
from echo_server.adapters.pusher.endpoint import PusherEndpoint
from echo_server.apps.model import App
from echo_server.demo.app import PRESENCE_CHANNEL, REVERB_STACK, WEBHOOK_PATH, Demo, DemoBackend
from echo_server.web.demo_files import DEMO_DIR, DemoFiles
from tests.conftest import ROOT, free_port, server_url
from tests.support.drivers import NODE_DIR, browser_missing, stop_driver
from tests.support.http import http_client
from tests.support.raw import RawWebSocket
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import wait_until

DRIVER = NODE_DIR / "demo_e2e.mjs"
ARTIFACTS = ROOT / "test-artifacts"
# Sub-second heartbeats: a dead server shows within about a second.
FAST_HEARTBEAT = {"pingInterval": 500, "pingTimeout": 500, "upgradeTimeout": 2000}
# The pages' own backoff, short for the test (the page default is 1 s doubling to 30 s).
FAST_RETRY = {"retryBase": "150", "retryMax": "500"}
# The demo runs with jwt.required: a Pusher connection that has not signed in by then is
# closed (default 30 s; short here, so a reverb page that did not would be closed in the test).
FAST_SIGNIN = {"signinTimeoutMs": 500}
A, B = 1, 2  # the demo's first two admins


def _browser_missing() -> str | None:
    missing = browser_missing()
    if missing is not None:
        return missing
    if not (DEMO_DIR / "index.html").is_file():
        return ("the demo page is not built: `npm ci --prefix clients/js && "
                "npm run build --prefix clients/js` (./scripts/setup does it)")
    return None


requires_browser = pytest.mark.skipif(_browser_missing() is not None,
                                      reason=_browser_missing() or "")


class DemoBrowser:
    """``tests/node/demo_e2e.mjs``: pages in headless Chromium, seen through their DOM."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.stderr = b""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(DRIVER), cwd=str(NODE_DIR), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            msg = json.loads(raw)
            future = self._waiting.pop(msg.get("id") or 0, None)
            if future is not None and not future.done():
                future.set_result(msg)
            elif msg.get("type") == "fatal":
                for pending in self._waiting.values():
                    pending.set_exception(AssertionError(f"browser driver died: {msg}"))
        if self.proc.stderr is not None:
            self.stderr = await self.proc.stderr.read()
        for pending in self._waiting.values():
            if not pending.done():
                pending.set_exception(AssertionError(
                    f"browser driver exited: {self.stderr.decode(errors='replace')[-2000:]}"))

    async def command(self, cmd: str, *, deadline: float = 20.0, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self.proc.stdin.write((json.dumps({"cmd": cmd, "id": ident, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        answer = await asyncio.wait_for(future, deadline)
        if answer.get("type") == "done" and not answer.get("ok"):
            raise AssertionError(f"{cmd} {args} failed: {answer.get('error')}")
        return answer

    async def open(self, page: str, url: str) -> dict[str, Any]:
        return await self.command("open", page=page, url=url)

    async def see(self, page: str, within: float = 5.0, **want: Any) -> dict[str, Any]:
        """Until page ``page`` shows everything in ``want``; fails with what it showed."""
        view = await self.command("wait", deadline=within + 10, page=page, want=want,
                                  timeout=within * 1000)
        assert view["ok"], f"page {page} never showed {want}; it showed {view}"
        return view

    async def view(self, page: str) -> dict[str, Any]:
        return await self.command("view", page=page)

    async def screenshot(self, page: str, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"demo-{name}.png"
        path.unlink(missing_ok=True)
        await self.command("screenshot", page=page, path=str(path))
        assert path.is_file() and path.stat().st_size > 5_000
        return path

    async def close(self) -> None:
        await stop_driver(self.proc, self._reader)


@pytest.fixture
async def browser() -> AsyncIterator[DemoBrowser]:
    driver = DemoBrowser()
    await driver.start()
    try:
        yield driver
    finally:
        await driver.close()


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    running = Demo(port=0, backend_port=0, socketio=FAST_HEARTBEAT, pusher=FAST_SIGNIN,
                   token_ttl=300)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def connected_tokens(demo: Demo) -> dict[int, set[str]]:
    """Admin id -> the token ids (``jti``) the server's open sockets were admitted with."""
    assert demo.server is not None
    tokens: dict[int, set[str]] = {}
    for socket in demo.server.core.connections.values():
        claims = socket.state.claims or {}
        if socket.connected and claims:
            tokens.setdefault(int(claims["sub"]), set()).add(claims["jti"])
    return tokens


async def outlast_the_signin_timeout(demo: Demo) -> None:
    """Until a Pusher connection opened now, which never signs in, is told 4009 and closed:
    then the sign-in timeout has passed for every connection opened before it too (the
    server checks them all in one sweep), and is in force."""
    assert demo.server is not None
    ws = await RawWebSocket.connect(demo.server, "protocol=7&client=js&version=8.4.0",
                                    path=f"/app/{demo.app_key}")
    try:
        assert json.loads(await ws.recv_text())["event"] == "pusher:connection_established"
        refusal = json.loads(await ws.recv_text())
        assert refusal["event"] == "pusher:error" and refusal["data"]["code"] == 4009, refusal
        assert await ws.wait_closed() == 4009
    finally:
        await ws.close()


# --------------------------------------------------------------------------- in the browser


@requires_browser
async def test_two_admins_live_through_a_server_restart(demo: Demo, browser: DemoBrowser) -> None:
    # A on laravel-echo 2 + socket.io-client 4, B on laravel-echo 1 + socket.io-client 2.
    url_a = demo.page_url(A, stack="echo2-sio4", **FAST_RETRY)
    url_b = demo.page_url(B, stack="echo1-sio2", **FAST_RETRY)
    first = await browser.open("A", url_a)
    assert first["me"] == "Ayşe Yılmaz" and first["stack"] == "echo2-sio4"
    assert len(first["leads"]) == 8 and first["capacity"] == {"1": 6, "2": 5, "3": 3}
    await browser.open("B", url_b)

    # Both connected for real (the indicator follows the socket), both see each other.
    for page in ("A", "B"):
        await browser.see(page, status="connected", statusText="Canlı", online=[A, B])
    await browser.screenshot("A", "1-online-A")

    # A gives Zeynep Kaya (lead 101, A's own) to B.
    await browser.command("select", page="A", lead=101, admin=str(B))
    seen_b = await browser.see(
        "B", leads={"101": {"assignee": "Mehmet Demir", "notice": True}},
        capacity={"1": 5, "2": 6}, toastsInclude=["Yeni lead atandı: Zeynep Kaya"])
    assert seen_b["leads"]["101"]["selected"] == str(A)  # not changed under B's hand
    seen_a = await browser.see("A", leads={"101": {"assignee": "Mehmet Demir"}},
                               capacity={"1": 5, "2": 6})
    # toOthers: A's tab got no broadcast of its own action, so no notice and no toast.
    await asyncio.sleep(0.3)
    seen_a = await browser.view("A")
    assert seen_a["leads"]["101"] == {"assignee": "Mehmet Demir", "selected": str(B),
                                      "notice": False}
    assert seen_a["toasts"] == []
    await browser.screenshot("A", "2-assigned-A")
    await browser.screenshot("B", "2-assigned-B")

    # B takes the change into the dropdown.
    await browser.command("click", page="B",
                          selector='tr[data-lead-id="101"] [data-test=accept-update]')
    await browser.see("B", leads={"101": {"selected": str(B), "notice": False}})

    # B leaves: A's list loses B. B comes back.
    await browser.command("close", page="B")
    await browser.see("A", online=[A])
    await browser.screenshot("A", "3-B-left")
    await browser.open("B", url_b)
    await browser.see("B", status="connected", online=[A, B])
    await browser.see("A", online=[A, B])

    # Both renew their handshake token now; the next connection must carry the new one.
    for page in ("A", "B"):
        await browser.command("eval", page=page, expr="window.demo.refreshToken()")
        await browser.see(page, tokenRefreshes=1)
    renewed = {admin: jtis[-1] for admin, jtis in demo.backend.issued.items()}
    assert connected_tokens(demo) != {a: {j} for a, j in renewed.items()}  # still the old ones

    # The server goes away: both say so within the heartbeat timeout, and keep retrying.
    await demo.stop_server()
    for page in ("A", "B"):
        down = await browser.see(page, within=2.5, status="disconnected",
                                 statusText="Bağlantı Kesildi", online=[])
        assert down["retryText"], down
    await browser.screenshot("A", "4-server-down-A")
    await browser.screenshot("B", "4-server-down-B")

    # Back on the same port: both reconnect, resubscribe (presence again) with the new tokens.
    await demo.start_server()
    for page in ("A", "B"):
        await browser.see(page, within=5, status="connected", statusText="Canlı",
                          online=[A, B], reconnects=1)
    assert connected_tokens(demo) == {A: {renewed[A]}, B: {renewed[B]}}
    await browser.screenshot("A", "5-reconnected-A")

    # The next assignment arrives: B gives Selin Arslan (lead 103, unassigned) to A.
    await browser.command("select", page="B", lead=103, admin=str(A))
    await browser.see("A", leads={"103": {"assignee": "Ayşe Yılmaz", "notice": True}},
                      capacity={"1": 6, "2": 6}, toastsInclude=["Yeni lead atandı: Selin Arslan"])
    await browser.see("B", leads={"103": {"assignee": "Ayşe Yılmaz", "notice": False}},
                      capacity={"1": 6, "2": 6})
    await browser.screenshot("A", "6-after-restart-A")
    await browser.screenshot("B", "6-after-restart-B")

    problems = (await browser.command("problems"))["pages"]
    assert all(not found for found in problems.values()), problems
    # Channel auth went through the backend for both admins' private and presence channels.
    granted = {(channel, admin) for channel, admin, status in demo.backend.auth_calls
               if status == 200}
    assert {("private-admin-dashboard.1", A), ("private-admin-dashboard.2", B),
            ("presence-leads-management", A), ("presence-leads-management", B)} <= granted


@requires_browser
@pytest.mark.parametrize("stack", ["echo2-sio4", "echo1-sio2"])
async def test_a_dropped_page_shows_the_assignment_made_meanwhile(demo: Demo,
                                                                 browser: DemoBrowser,
                                                                 stack: str) -> None:
    """A's connection goes through a TCP proxy that cuts it without a close (browsers'
    offline modes leave open websockets alone) while B assigns A a lead: A reconnects as the
    same session, shows the assignment without a reload, and says it recovered; B never
    sees A leave (the drop is shorter than the presence grace). socket.io-client 4 does its
    half by the protocol; on socket.io-client 2 the kit speaks echo-server's extension (and
    the socket id is the new engine session's there)."""
    proxy = TcpProxy(demo.port)
    await proxy.start()
    try:
        url_a = demo.page_url(A, stack=stack, echo=proxy.url, **FAST_RETRY)
        await browser.open("A", url_a)
        await browser.open("B", demo.page_url(B, stack="echo2-sio4", **FAST_RETRY))
        for page in ("A", "B"):
            await browser.see(page, status="connected", online=[A, B], recovered=False)
        before = await browser.view("A")

        proxy.cut()
        await browser.see("A", status="disconnected")
        await browser.command("select", page="B", lead=103, admin=str(A))
        await browser.see("B", leads={"103": {"assignee": "Ayşe Yılmaz"}})
        proxy.release()

        after = await browser.see(
            "A", within=5, status="connected", recovered=True, reconnects=1, online=[A, B],
            leads={"103": {"assignee": "Ayşe Yılmaz", "notice": True}},
            toastsInclude=["Yeni lead atandı: Selin Arslan"])
        assert (after["socketId"] == before["socketId"]) == (stack == "echo2-sio4")
        await browser.screenshot("A", f"7-recovered-A-{stack}")
        assert (await browser.view("B"))["online"] == [A, B]
        presence_auth = [c for c in demo.backend.auth_calls
                         if c[0] == "presence-leads-management"]
        assert len(presence_auth) == 2  # one per admin: the recovery asked for none
    finally:
        await proxy.stop()


@requires_browser
async def test_the_backend_hears_an_admin_leave_through_webhooks(demo: Demo,
                                                                 browser: DemoBrowser) -> None:
    """The backend's list of admins online comes from echo-server's webhooks only
    (``member_added`` / ``member_removed``, signed with the app's secret): both pages show
    each other in it; B's page closes and A's list loses B within 3 s (a closed page sends a
    close frame, which ends its membership at once: no presence grace, as for a drop)."""
    await browser.open("A", demo.page_url(A, stack="echo2-sio4", **FAST_RETRY))
    await browser.open("B", demo.page_url(B, stack="echo1-sio2", **FAST_RETRY))
    for page in ("A", "B"):
        await browser.see(page, status="connected", online=[A, B], onlineLaravel=[A, B])
    assert demo.backend.online.ids == [A, B]
    await browser.screenshot("A", "8-online-per-laravel-A")

    await browser.command("close", page="B")
    gone = await browser.see("A", within=3, onlineLaravel=[A])
    assert gone["online"] == [A]
    await browser.screenshot("A", "9-B-offline-per-laravel-A")
    problems = (await browser.command("problems"))["pages"]
    assert all(not found for found in problems.values()), problems


@requires_browser
async def test_lead_assignment_between_a_socket_io_page_and_a_reverb_page(
        demo: Demo, browser: DemoBrowser) -> None:
    """A on socket.io Echo (laravel-echo 2 + socket.io-client 4), B on Echo's ``reverb``
    broadcaster over pusher-js (the Pusher protocol at ``/app/{key}``, signatures from the
    backend's ``/broadcasting/auth``): one presence list holds both, each page shows what the
    other assigns, neither hears its own action (toOthers with either kind of socket id), both
    come back through a server restart, and the pusher-js page sees the socket.io one leave.
    B signs in (``/broadcasting/user-auth``) on each connection, so it outlasts the server's
    sign-in timeout on the first and on the one after the restart."""
    await browser.open("A", demo.page_url(A, stack="echo2-sio4", **FAST_RETRY))
    opened = await browser.open("B", demo.page_url(B, stack=REVERB_STACK, **FAST_RETRY))
    assert opened["stack"] == REVERB_STACK
    for page in ("A", "B"):
        await browser.see(page, status="connected", statusText="Canlı", online=[A, B],
                          onlineLaravel=[A, B])
    assert demo.server is not None
    on_pusher = {connection.id for connection in demo.server.part(PusherEndpoint).connections}
    socket_b = (await browser.view("B"))["socketId"]
    assert socket_b in on_pusher
    assert (await browser.view("A"))["socketId"] not in on_pusher
    await browser.screenshot("B", "10-reverb-online-B")

    # B signed in as B, so the sign-in timeout passes and B's connection stays.
    await outlast_the_signin_timeout(demo)
    assert {c.state.user for c in demo.server.part(PusherEndpoint).connections} == {str(B)}

    # A (socket.io) gives Zeynep Kaya (lead 101) to B (pusher-js), on that same connection.
    await browser.command("select", page="A", lead=101, admin=str(B))
    await browser.see("B", leads={"101": {"assignee": "Mehmet Demir", "notice": True}},
                      capacity={"1": 5, "2": 6}, toastsInclude=["Yeni lead atandı: Zeynep Kaya"],
                      status="connected", socketId=socket_b, reconnects=0)
    await browser.screenshot("B", "11-reverb-assigned-B")

    # B (pusher-js) gives Selin Arslan (lead 103, unassigned) to A (socket.io).
    await browser.command("select", page="B", lead=103, admin=str(A))
    seen_a = await browser.see(
        "A", leads={"103": {"assignee": "Ayşe Yılmaz", "notice": True}},
        capacity={"1": 6, "2": 6}, toastsInclude=["Yeni lead atandı: Selin Arslan"])
    # A page gets its events in order: had A's own assignment come back, it would show by now.
    assert seen_a["leads"]["101"] == {"assignee": "Mehmet Demir", "selected": str(B),
                                      "notice": False}
    assert not any("Zeynep Kaya" in toast for toast in seen_a["toasts"])
    await browser.screenshot("A", "12-socketio-assigned-by-reverb-A")

    # A gives B lead 105 (unassigned): by then B's own assignment would have come back to B
    # too; it did not (toOthers with a pusher-js socket id).
    await browser.command("select", page="A", lead=105, admin=str(B))
    seen_b = await browser.see("B", leads={"105": {"assignee": "Mehmet Demir", "notice": True}},
                               capacity={"1": 6, "2": 7})
    assert seen_b["leads"]["103"] == {"assignee": "Ayşe Yılmaz", "selected": str(A),
                                      "notice": False}
    assert not any("Selin Arslan" in toast for toast in seen_b["toasts"])

    # The server restarts under both: both say so, and come back into one presence list.
    await demo.stop_server()
    for page in ("A", "B"):
        await browser.see(page, within=2.5, status="disconnected", online=[])
    await demo.start_server()
    # pusher-js reports an attempt refused while the server was down only when its
    # unavailableTimeout (5 s in the kit) ends it: then the next retry connects.
    for page in ("A", "B"):
        await browser.see(page, within=8, status="connected", online=[A, B], reconnects=1)

    # B signed in again on its new connection: it outlasts the timeout and hears A give it
    # Can Koç (lead 106).
    socket_b = (await browser.view("B"))["socketId"]
    await outlast_the_signin_timeout(demo)
    await browser.command("select", page="A", lead=106, admin=str(B))
    await browser.see("B", leads={"106": {"assignee": "Mehmet Demir", "notice": True}},
                      toastsInclude=["Yeni lead atandı: Can Koç"], status="connected",
                      socketId=socket_b, reconnects=1)

    # A leaves: the pusher-js page loses a socket.io member, in presence and per Laravel.
    await browser.command("close", page="A")
    await browser.see("B", within=3, online=[B], onlineLaravel=[B])
    problems = (await browser.command("problems"))["pages"]
    assert all(not found for found in problems.values()), problems
    granted = {(channel, admin) for channel, admin, status in demo.backend.auth_calls
               if status == 200}
    assert {("private-admin-dashboard.2", B), ("presence-leads-management", B)} <= granted


@requires_browser
async def test_echo_server_demo_command(browser: DemoBrowser) -> None:
    """``python -m echo_server demo`` as a user runs it: it prints the URL, the page loads and
    renders the lead table, Ctrl+C (SIGINT) stops both parts."""
    port, backend_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "echo_server", "demo", "--port", str(port),
        "--backend-port", str(backend_port), cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        printed = ""
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, f"the demo exited early: {printed}"
            printed += line
            match = re.search(r"(http://127\.0\.0\.1:\d+/demo/\?admin=1\S*)", line)
            url = match.group(1) if match else None
        assert url.startswith(f"http://127.0.0.1:{port}/demo/?admin=1&api=")
        assert f"127.0.0.1:{backend_port}" in url
        async with http_client() as http, http.get(url) as response:
            assert response.status == 200
            assert "<title>Lead Yönetimi" in await response.text()
        view = await browser.open("page", url)
        assert len(view["leads"]) == 8 and view["leads"]["101"]["assignee"] == "Ayşe Yılmaz"
        await browser.see("page", status="connected", statusText="Canlı", online=[A])
        await browser.screenshot("page", "0-demo-command")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
    assert code == 0


# --------------------------------------------------------------------------- /demo files


async def test_demo_route_serves_files_and_nothing_else(make_server, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = await make_server(redis=False)
    base = server_url(server)
    built = tmp_path / "demo"
    (built / "assets").mkdir(parents=True)
    (built / "index.html").write_text("<title>Lead Yönetimi</title>", encoding="utf-8")
    (built / "assets" / "app-1a2b.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not for you")
    server.demo_files = DemoFiles(built)
    async with http_client() as http:
        async with http.get(f"{base}/demo", params={"admin": "2"},
                            allow_redirects=False) as response:
            assert response.status == 301
            assert response.headers["Location"] == "/demo/?admin=2"
        async with http.get(f"{base}/demo/?admin=2") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            assert "Lead Yönetimi" in await response.text()
        async with http.get(f"{base}/demo/assets/app-1a2b.js") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/javascript"
            assert "immutable" in response.headers["Cache-Control"]
        for path in ("/demo/../secret.txt", "/demo/%2e%2e/secret.txt", "/demo//etc/passwd",
                     "/demo/assets/../../secret.txt", "/demo/assets", "/demo/nope.js",
                     "/demo/..%5csecret.txt", "/demo/%00"):
            async with http.get(raw_url(base + path)) as response:
                assert response.status == 404, path
                assert "not for you" not in await response.text()
        async with http.post(f"{base}/demo/") as response:
            assert response.status == 405

    # Not built: 404 and one log line that says how to build it.
    server.demo_files = DemoFiles(tmp_path / "missing")
    with caplog.at_level(logging.WARNING, logger="echo_server.demo"):
        async with http_client() as http:
            for _ in range(2):
                async with http.get(f"{base}/demo/") as response:
                    assert response.status == 404
    hints = [r.getMessage() for r in caplog.records if "not built" in r.getMessage()]
    assert len(hints) == 1 and "npm run build --prefix clients/js" in hints[0]


def raw_url(url: str) -> URL:
    """A URL aiohttp sends as written (no normalising of ``..``)."""
    return URL(url, encoded=True)


# --------------------------------------------------------------------------- the backend


async def test_demo_backend_takes_only_signed_webhooks_once() -> None:
    """The webhook route as echo-server's sender sees it: a batch signed with another
    secret, or under another key, is refused with 401 and changes nothing; a redelivered
    batch (same ``X-Webhook-Id``) is answered 200 but not applied twice; the channel
    occupied again (after a restart that reported nobody leaving) starts the list over."""
    backend = DemoBackend(secret="a JWT secret of 32 bytes or more.", app_key="key",
                          app_secret="app-secret", port=0)
    await backend.start()

    def batch(ident: str, *events: str, key: str = "key",
              secret: str = "app-secret") -> dict[str, Any]:
        """``events``: ``name`` or ``name:user_id``."""
        body = json.dumps({"time_ms": 1, "events": [
            {"name": name, "channel": PRESENCE_CHANNEL, **({"user_id": user} if user else {})}
            for name, _, user in (event.partition(":") for event in events)]}).encode()
        return {"data": body, "headers": {
            "Content-Type": "application/json", "X-Pusher-Key": key, "X-Webhook-Id": ident,
            "X-Pusher-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}}

    async def online(http: aiohttp.ClientSession) -> list[int]:
        async with http.get(f"{backend.url}/api/leads", headers={
                "Authorization": f"Bearer {backend.issue_token(1)}"}) as response:
            return list((await response.json())["online_admin_ids"])

    joined = batch("b1", "channel_occupied", "member_added:1", "member_added:2")
    try:
        async with http_client() as http:
            url = backend.url + WEBHOOK_PATH
            for request, status in ((joined, 200),
                                    (batch("b2", "member_removed:2"), 200),
                                    (joined, 200),  # a late redelivery: 2 stays gone
                                    (batch("b3", "member_added:3", secret="nope"), 401),
                                    (batch("b4", "member_added:3", key="other"), 401)):
                async with http.post(url, **request) as response:
                    assert response.status == status
            assert await online(http) == [1]
            async with http.post(url, **batch("b5", "channel_occupied", "member_added:3")) as r:
                assert r.status == 200
            assert await online(http) == [3]
    finally:
        await backend.stop()


async def test_demo_backend_signs_a_pusher_user_in() -> None:
    """``/broadcasting/user-auth`` as pusher-js calls it: for the admin of the Bearer token,
    the user as JSON text and the app's signature, which echo-server's check of
    ``pusher:signin`` accepts for that socket id only; refused without a token and for a socket
    id Laravel's driver would refuse."""
    backend = DemoBackend(secret="a JWT secret of 32 bytes or more.", app_key="key",
                          app_secret="app-secret", port=0)
    await backend.start()
    url = f"{backend.url}/broadcasting/user-auth"
    bearer = {"Authorization": f"Bearer {backend.issue_token(B)}"}
    try:
        async with http_client() as http:
            async with http.post(url, data={"socket_id": "123.456"}, headers=bearer) as response:
                assert response.status == 200
                answer = await response.json()
            for socket_id, headers in (("123.456", {}), ("abc", bearer), ("123.456.7", bearer)):
                async with http.post(url, data={"socket_id": socket_id},
                                     headers=headers) as response:
                    assert response.status == 403, (socket_id, headers)
    finally:
        await backend.stop()
    assert json.loads(answer["user_data"]) == {"id": str(B), "name": "Mehmet Demir"}
    app = App("lead-panel", "key", "app-secret")
    assert signed_in_user(app, "123.456", answer["auth"], answer["user_data"]) == str(B)
    assert signed_in_user(app, "123.457", answer["auth"], answer["user_data"]) is None


async def test_demo_backend_plays_laravel_through_redis(redis_url: str) -> None:
    """With ``--redis`` the backend publishes to Redis as Laravel does and the server
    subscribes: an assignment reaches the other admin's socket, not the actor's own."""
    from echo_client import EchoClient

    running = Demo(port=0, backend_port=0, redis_url=redis_url, socketio=FAST_HEARTBEAT)
    await running.start()
    assert running.server is not None
    for runner in running.server.runners:
        if runner.source.kind == "redis":
            await asyncio.wait_for(runner.connected_event.wait(), 10)
    api = running.backend.url
    clients: list[EchoClient] = []
    try:
        async with http_client() as http:
            async with http.get(f"{api}/api/session", params={"admin": "9"}) as response:
                assert response.status == 404
            tokens = {}
            for admin in (A, B):
                async with http.get(f"{api}/api/session", params={"admin": str(admin)}) as r:
                    tokens[admin] = (await r.json())["token"]
            async with http.get(f"{api}/api/leads") as response:
                assert response.status == 401

            inboxes: dict[int, asyncio.Queue[Any]] = {}
            for admin in (A, B):
                client = EchoClient(running.url, token=tokens[admin], transports=["websocket"])
                clients.append(client)
                await client.connect()
                inbox: asyncio.Queue[Any] = asyncio.Queue()
                inboxes[admin] = inbox
                client.channel("leads-management").listen(".lead.assigned", inbox.put_nowait)
                client.private(f"admin-dashboard.{admin}").listen(
                    ".lead.assigned", lambda data, a=admin: inboxes[a].put_nowait(("me", data)))
                client.private(f"admin-dashboard.{3 - admin}").error(
                    lambda status, a=admin: inboxes[a].put_nowait(("refused", status)))
            for admin in (A, B):  # each may not read the other's dashboard
                assert await asyncio.wait_for(inboxes[admin].get(), 5) == ("refused", 403)
            server = running.server
            await wait_until(lambda: server.core.rooms.count("leads-management") == 2
                             and server.core.rooms.count("private-admin-dashboard.2") == 1,
                             "both subscribed")

            async with http.post(f"{api}/api/leads/101/assign", json={"admin_id": B},
                                 headers={"Authorization": f"Bearer {tokens[A]}",
                                          "X-Socket-ID": clients[0].socket_id or ""}) as r:
                assert r.status == 200
                answer = await r.json()
            assert answer["broadcast"] == "sent"
            assert answer["lead"]["assigned_admin"]["id"] == B
            assert {a["id"]: a["leads_assigned_count"] for a in answer["admins"]} == {
                1: 5, 2: 6, 3: 3}
            got = [await asyncio.wait_for(inboxes[B].get(), 5) for _ in range(2)]
            public = next(g for g in got if not isinstance(g, tuple))
            mine = next(g[1] for g in got if isinstance(g, tuple))
            assert public["assignment"]["assigned_by"]["id"] == A
            assert mine["notification"]["title"] == "Yeni lead atandı: Zeynep Kaya"
            assert public["socket"] == clients[0].socket_id  # Laravel puts it in data too
            with pytest.raises(TimeoutError):  # toOthers: nothing for the acting socket
                await asyncio.wait_for(inboxes[A].get(), 0.3)
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
        await running.stop()

