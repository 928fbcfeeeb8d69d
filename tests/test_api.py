"""The HTTP API on the Socket.IO port: the core's part (`GET /`, the event POST,
the socket.io.js bundle), with the reference's shapes and without its crashes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from echo_server.web import static_dir
from tests.conftest import server_url
from tests.support.http import http_client

EVENT = {"channel": "leads-management", "name": "lead.assigned", "data": {"lead": {"id": 1}}}


class RawWebsocketClient:
    """An EIO3 websocket client subscribed to channels, collecting every event."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.sid = ""

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, base: str,
                      *channels: str) -> RawWebsocketClient:
        ws = await http.ws_connect(
            base.replace("http", "ws") + "/socket.io/?EIO=3&transport=websocket", autoping=False)
        client = cls(ws)
        opened = json.loads((await ws.receive_str())[1:])
        client.sid = opened["sid"]
        assert await ws.receive_str() == "40"
        for channel in channels:
            await ws.send_str("42" + json.dumps(["subscribe", {"channel": channel}]))
        return client

    async def next_event(self, timeout: float = 5.0) -> list[Any]:
        while True:
            text = await asyncio.wait_for(self.ws.receive_str(), timeout)
            if text.startswith("42"):
                return json.loads(text[2:])


async def _wait_members(server, channel: str, count: int) -> None:
    for _ in range(500):
        if server.core.rooms.count(channel) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{channel} never reached {count} members")


async def test_root_answers_ok(make_server) -> None:
    server = await make_server(redis=False)
    async with http_client() as http, http.get(server_url(server) + "/") as response:
        assert response.status == 200
        assert await response.text() == "OK"


async def test_event_post_reaches_subscribers(make_server) -> None:
    server = await make_server(redis=False)
    base = server_url(server)
    async with http_client() as http:
        client = await RawWebsocketClient.connect(http, base, "leads-management")
        await _wait_members(server, "leads-management", 1)
        async with http.post(f"{base}/apps/test-app/events?auth_key=test-key",
                             json=EVENT) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            assert response.headers["X-Powered-By"] == "Express"
            assert await response.json() == {"message": "ok"}
        assert await client.next_event() == ["lead.assigned", "leads-management",
                                             {"lead": {"id": 1}}]
        # `data` given as a JSON string is decoded; `channels` fans out to each.
        body = {"channels": ["leads-management", "other"], "name": "x",
                "data": json.dumps({"n": 2})}
        async with http.post(f"{base}/apps/test-app/events",
                             headers={"Authorization": "Bearer test-key"},
                             json=body) as response:
            assert response.status == 200
        assert await client.next_event() == ["x", "leads-management", {"n": 2}]


async def test_socket_id_excludes_the_sender(make_server) -> None:
    server = await make_server(redis=False)
    base = server_url(server)
    url = f"{base}/apps/test-app/events?auth_key=test-key"
    async with http_client() as http:
        sender = await RawWebsocketClient.connect(http, base, "c")
        other = await RawWebsocketClient.connect(http, base, "c")
        await _wait_members(server, "c", 2)
        async with http.post(url, json={**EVENT, "channel": "c", "socket_id": sender.sid}):
            pass
        async with http.post(url, json={**EVENT, "channel": "c", "name": "marker"}):
            pass
        assert (await other.next_event())[0] == "lead.assigned"
        # The sender's first event is the marker: the toOthers event never came.
        assert (await sender.next_event())[0] == "marker"


@pytest.mark.parametrize(("headers", "query", "status"), [
    ({}, "", 403),
    ({}, "?auth_key=wrong", 403),
    ({"Authorization": "Bearer wrong"}, "?auth_key=test-key", 403),  # the header wins
    ({"Authorization": "Bearer test-key"}, "?auth_key=wrong", 200),
])
async def test_key_check(make_server, headers: dict[str, str], query: str, status: int) -> None:
    server = await make_server(redis=False)
    async with http_client() as http, http.post(
            f"{server_url(server)}/apps/test-app/events{query}", headers=headers,
            json=EVENT) as response:
        assert response.status == status
        if status == 403:
            assert await response.json() == {"error": "Unauthorized"}


@pytest.mark.parametrize("body", [
    b"", b"null", b"not json", b"{", b"[1,2]", b'"text"',
    json.dumps({"channel": "c", "name": "n"}).encode(),
    json.dumps({"channel": "", "name": "n", "data": {"a": 1}}).encode(),
    json.dumps({"channels": [], "name": "n", "data": {"a": 1}}).encode(),
    json.dumps({"channel": "c", "data": {"a": 1}}).encode(),
])
async def test_bad_bodies_are_400_and_the_server_lives(make_server, body: bytes) -> None:
    """A non-JSON, empty or null body kills the reference; here it is a 400."""
    server = await make_server(redis=False)
    base = server_url(server)
    async with http_client() as http:
        async with http.post(f"{base}/apps/test-app/events?auth_key=test-key", data=body,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
            error = (await response.json())["error"]
            assert isinstance(error, str) and error
        async with http.post(f"{base}/apps/test-app/events?auth_key=test-key",
                             json=EVENT) as response:
            assert response.status == 200


async def test_incomplete_event_uses_the_reference_message(make_server) -> None:
    server = await make_server(redis=False)
    async with http_client() as http, http.post(
            f"{server_url(server)}/apps/test-app/events?auth_key=test-key",
            json={"channel": "c", "name": "n"}) as response:
        assert await response.json() == {"error": "Event must include channel, event name "
                                                   "and data"}


async def test_http_subscriber_off_removes_the_route(make_server) -> None:
    server = await make_server({"subscribers": {"http": False}}, redis=False)
    async with http_client() as http, http.post(
            f"{server_url(server)}/apps/test-app/events?auth_key=test-key",
            json=EVENT) as response:
        assert response.status == 404
        assert "Cannot POST /apps/test-app/events" in await response.text()


async def test_unknown_route_options_and_cors(make_server) -> None:
    server = await make_server({"apiOriginAllow": {
        "allowCors": True, "allowOrigin": "https://admin.example.com",
        "allowMethods": "GET, POST", "allowHeaders": "Authorization"},
        "headers": {"X-Served-By": "echo"}}, redis=False)
    base = server_url(server)
    async with http_client() as http:
        async with http.get(f"{base}/nope") as response:
            assert response.status == 404
            assert "Cannot GET /nope" in await response.text()
            assert response.headers["Access-Control-Allow-Origin"] == "https://admin.example.com"
            assert response.headers["X-Served-By"] == "echo"
        async with http.options(f"{base}/apps/test-app/events") as response:
            assert response.status == 200  # no key check on OPTIONS, as the reference
            assert await response.text() == "GET,HEAD"
        async with http.post(f"{base}/apps/test-app/events", json=EVENT) as response:
            assert response.status == 403
            assert response.headers["Access-Control-Allow-Methods"] == "GET, POST"


async def test_oversized_body_is_refused(make_server) -> None:
    server = await make_server({"socketio": {"maxHttpBufferSize": 10_000}}, redis=False)
    base = server_url(server)
    body = {**EVENT, "data": {"blob": "x" * 200_000}}
    async with http_client() as http:
        try:
            async with http.post(f"{base}/apps/test-app/events?auth_key=test-key",
                                 json=body) as response:
                status: int | None = response.status
        except aiohttp.ClientError:
            status = None  # closed while the body was still being sent
        assert status in (413, None)
        async with http.get(base + "/") as response:
            assert response.status == 200


async def test_client_bundle_route(make_server, tmp_path: Path, monkeypatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    static = tmp_path / "static"
    static.mkdir()
    monkeypatch.setenv("ECHO_SERVER_STATIC_DIR", str(static))
    server = await make_server(redis=False)
    url = f"{server_url(server)}/socket.io/socket.io.js"
    async with http_client() as http:
        with caplog.at_level("WARNING", logger="echo_server.bundle"):
            async with http.get(url) as response:
                assert response.status == 404
            async with http.get(url) as response:
                assert response.status == 404
        hints = [r for r in caplog.records if "install-client" in r.getMessage()]
        assert len(hints) == 1  # said once, not per request

    (static / "socket.io.js").write_text("/*! socket.io-client v2.5.0 */ var io;")
    server2 = await make_server(redis=False)
    async with http_client() as http:
        async with http.get(f"{server_url(server2)}/socket.io/socket.io.js") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("application/javascript")
            assert response.headers["ETag"] == '"2.5.0"'
            assert "socket.io-client v2.5.0" in await response.text()
        async with http.get(f"{server_url(server2)}/socket.io/socket.io.js",
                            headers={"If-None-Match": '"2.5.0"'}) as response:
            assert response.status == 304


def test_installed_bundle_is_socket_io_client_2() -> None:
    """The set-up installs the real bundle; pages written for the reference load it."""
    path = static_dir() / "socket.io.js"
    if not path.exists():
        pytest.skip("bundle not installed (echo-server install-client needs npm)")
    head = path.read_text(errors="replace")[:300]
    assert "Socket.IO v2.5.0" in head


async def test_read_routes(make_server, auth_backend) -> None:
    """`/status`, `/channels`, `/channels/{name}` and `/users`, with the reference's shapes."""
    auth_backend.presence("presence-leads-management", 5, {"name": "Ayşe"})
    server = await make_server({"authHost": auth_backend.url}, redis=False)
    base = server_url(server)
    key = "?auth_key=test-key"
    async with http_client() as http:
        a = await RawWebsocketClient.connect(http, base, "leads-management", "orders")
        b = await RawWebsocketClient.connect(http, base, "leads-management")
        await a.ws.send_str("42" + json.dumps(
            ["subscribe", {"channel": "presence-leads-management"}]))
        assert (await a.next_event())[0] == "presence:subscribed"
        await _wait_members(server, "leads-management", 2)

        async with http.get(f"{base}/apps/test-app/status{key}") as response:
            status = await response.json()
        assert status["subscription_count"] == 2  # connections, as the reference counts
        assert status["uptime"] > 0
        assert status["memory_usage"]["rss"] > 1_000_000

        async with http.get(f"{base}/apps/test-app/channels{key}") as response:
            assert await response.json() == {"channels": {
                "leads-management": {"subscription_count": 2, "occupied": True},
                "orders": {"subscription_count": 1, "occupied": True},
                "presence-leads-management": {"subscription_count": 1, "occupied": True}}}
        async with http.get(f"{base}/apps/test-app/channels{key}&filter_by_prefix=lead") as r:
            assert list((await r.json())["channels"]) == ["leads-management"]

        async with http.get(f"{base}/apps/test-app/channels/orders{key}") as response:
            assert await response.json() == {"subscription_count": 1, "occupied": True}
        async with http.get(f"{base}/apps/test-app/channels/empty{key}") as response:
            assert await response.json() == {"subscription_count": 0, "occupied": False}
        async with http.get(
                f"{base}/apps/test-app/channels/presence-leads-management{key}") as response:
            assert await response.json() == {"subscription_count": 1, "occupied": True,
                                             "user_count": 1}
        async with http.get(
                f"{base}/apps/test-app/channels/presence-leads-management/users{key}") as r:
            assert await r.json() == {"users": [{"id": 5, "user_info": {"name": "Ayşe"}}]}
        async with http.get(f"{base}/apps/test-app/channels/orders/users{key}") as response:
            assert response.status == 400
            assert await response.json() == {
                "error": "User list is only possible for Presence Channels"}
        async with http.get(f"{base}/apps/test-app/status") as response:
            assert response.status == 403
        async with http.get(f"{base}/apps/test-app/status/x{key}") as response:
            assert response.status == 404
        await b.ws.close()
