"""Private and presence channels end to end: real Echo stacks, a real
``/broadcasting/auth`` backend (tests/support/auth_backend.py), Redis publishes
in Laravel's format (protocol sheet §2-§5).

What a frontend sees: authorized channels receive broadcasts, refused ones get
``subscription_error`` and nothing else; ``here``/``joining``/``leaving`` count
users, not tabs, on the memory and the Redis presence store; 50 users joining
at once are all listed; whispers are bounded; no socket ids leak; no
disconnect, at any moment, leaves a ghost member. What Laravel sees: exactly
the auth request laravel-echo-server sends, plus ``socket_id``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis
import socketio

from channel_auth import AuthRequest
from channel_auth.http_callback import HttpCallbackAuthorizer, choose_auth_host
from echo_server.core.presence import (
    JoinResult,
    LeaveResult,
    Member,
    PresenceStore,
    RedisPresenceStore,
)
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, laravel_message, requires_node, server_url
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.node_client import NodeEchoClient
from tests.support.raw import OP_TEXT, RawWebSocket, client_frame
from tests.support.waits import ClientFactory, server_socket, wait_gone, wait_member, wait_until

pytestmark = requires_node

STACKS = ("echo1-sio2", "echo2-sio2", "echo2-sio4")
ROOM = "presence-room"
# Raw clients (tests/support/raw.py, python-socketio) do not answer sub-second heartbeats
# reliably on a loaded machine; their tests use the defaults.
DEFAULT_PING = {"socketio": {"pingInterval": 25000, "pingTimeout": 20000}}


@pytest.fixture
def prefix() -> str:
    """Laravel's ``<app>_database_`` prefix, unique per test: presence keys in the shared
    Redis never meet another test's."""
    return f"app{secrets.token_hex(3)}_database_"


async def _server(make_server: ServerFactory, auth_backend: AuthBackend, prefix: str, *,
                  database: str = "redis", **options: Any) -> EchoServer:
    db_config: dict[str, Any] = {"redis": {"keyPrefix": prefix}}
    db_config.update(options.pop("databaseConfig", {}))
    server = await make_server({"authHost": auth_backend.url, "database": database,
                                "databaseConfig": db_config, **options})
    store = server.core.presence.store
    assert isinstance(store, RedisPresenceStore) == (database == "redis"), type(store)
    return server


async def _client(server: EchoServer, node_client: ClientFactory, stack: str = "echo1-sio2",
                  **kwargs: Any) -> tuple[NodeEchoClient, str]:
    kwargs.setdefault("transports", "websocket")
    client = await node_client(stack, server_url(server), **kwargs)
    connected = await client.expect("connected")
    return client, connected["socketId"]


async def _publish(redis: aioredis.Redis, prefix: str, channel: str, event: str,
                   data: dict[str, Any]) -> None:
    await redis.publish(prefix + channel, laravel_message(event, data))


def _lower(call: AuthCall) -> dict[str, str]:
    return {name.lower(): value for name, value in call.headers.items()}


def _info(user_id: Any) -> dict[str, str]:
    return {"name": f"user {user_id}"}


def _user(user_id: Any, *, pusher_style: bool = False) -> dict[str, str]:
    """``auth.headers`` telling the backend who this tab is (JSON, so ``"1"`` stays a string)."""
    headers = {"X-User-Id": json.dumps(user_id)}
    if pusher_style:
        headers["X-Pusher-Style"] = "1"
    return headers


def _as_member(call: AuthCall) -> dict[str, Any]:
    """Laravel's presence answer for the tab's user; ``channel_data`` as a JSON string
    (Pusher style) when the tab asks for it."""
    headers = _lower(call)
    user_id = json.loads(headers["x-user-id"])
    data = {"user_id": user_id, "user_info": _info(user_id)}
    if headers.get("x-pusher-style"):
        return {"channel_data": json.dumps(data)}
    return {"channel_data": data}


def _raw_presence(client: NodeEchoClient) -> list[dict[str, Any]]:
    return [m for m in client.history
            if m.get("type") == "raw" and str(m.get("event", "")).startswith("presence:")]


def _assert_no_socket_ids(clients: list[NodeEchoClient], socket_ids: list[str]) -> None:
    for client in clients:
        for line in _raw_presence(client):
            text = json.dumps(line)
            assert "socketId" not in text, line
            assert not any(sid in text for sid in socket_ids), line


# --------------------------------------------------------------------------- private channels

@pytest.mark.parametrize("stack", STACKS)
async def test_private_channel_answers(make_server: ServerFactory, node_client: ClientFactory,
                                       redis: aioredis.Redis, auth_backend: AuthBackend,
                                       prefix: str, stack: str) -> None:
    """200 (JSON ``true`` or an HTML page) joins and receives Laravel's broadcasts; 403 and a
    redirect (not followed) are refusals with their status; a backend slower than
    ``authTimeout`` is a refusal with 0. A refused tab receives nothing of that channel."""
    server = await _server(make_server, auth_backend, prefix, authTimeout=300)
    auth_backend.allow_private("private-orders")
    auth_backend.rules["private-html"] = "<!doctype html><title>Dashboard</title>"
    auth_backend.rules["private-refused"] = 403
    auth_backend.rules["private-moved"] = 302
    client, socket_id = await _client(server, node_client, stack, raw=True)
    for name in ("orders", "html", "refused", "moved"):
        await client.command({"cmd": "private", "channel": name, "listen": [".order.shipped"]})
    await client.expect("subscription_error", channel="private-refused", status=403)
    await client.expect("subscription_error", channel="private-moved", status=302)
    await wait_member(server, "private-orders", socket_id)
    await wait_member(server, "private-html", socket_id)

    auth_backend.gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.command({"cmd": "private", "channel": "slow", "listen": [".order.shipped"]})
    await client.expect("subscription_error", channel="private-slow", status=0, timeout=5)
    assert loop.time() - started >= 0.3 - 0.05  # the configured 300 ms, not an early failure
    auth_backend.gate.set()
    # One request each: no retry, and the redirect was not followed.
    assert sorted(c.channel for c in auth_backend.calls) == [
        "private-html", "private-moved", "private-orders", "private-refused", "private-slow"]

    # Refused channels first: anything leaking from them would arrive before the last event.
    for name in ("refused", "moved", "slow", "orders", "html"):
        await _publish(redis, prefix, f"private-{name}", "order.shipped", {"order": name})
    for name in ("orders", "html"):
        got = await client.expect("event", channel=f"private-{name}")
        assert got["data"] == {"order": name, "socket": None}
    assert not client.backlog("event")
    leaked = [m for m in client.backlog("raw") if m["event"] == "order.shipped"
              and m["args"][0] not in ("private-orders", "private-html")]
    assert leaked == []
    assert not server.core.rooms.count("private-refused")
    assert not server.core.rooms.count("private-moved")
    assert not server.core.rooms.count("private-slow")


HANDSHAKE = {"Cookie": "laravel_session=from-handshake", "Referer": "http://app.test/dashboard",
             "User-Agent": "Browser/1.0", "X-Forwarded-For": "203.0.113.9"}
# aiohttp's own request headers; everything else must be ours or the client's.
CLIENT_LIBRARY_HEADERS = {"accept", "accept-encoding", "user-agent"}


@pytest.mark.parametrize(("stack", "transports"), [
    *((stack, "websocket") for stack in STACKS), ("echo1-sio2", "polling")])
async def test_auth_request_is_what_laravel_expects(make_server: ServerFactory,
                                                    node_client: ClientFactory,
                                                    auth_backend: AuthBackend, prefix: str,
                                                    stack: str, transports: str) -> None:
    """POST form ``channel_name`` + ``socket_id`` (= Echo.socketId()), ``X-Requested-With``,
    Echo's ``auth.headers`` as given, the Cookie from ``auth.headers`` or else from the
    handshake; no other handshake header (Authorization, User-Agent, Referer, ...)."""
    server = await _server(make_server, auth_backend, prefix)
    auth_backend.allow_private("private-orders")
    tabs = [
        # bearerToken + csrfToken + a custom header; the session cookie comes from the handshake.
        await _client(server, node_client, stack, transports=transports, auth_token="api-token",
                      csrf_token="csrf-token", auth_headers={"X-Tenant": "acme"},
                      extra_headers=HANDSHAKE),
        # An explicit Cookie wins over the handshake's; the handshake's Authorization stays home.
        await _client(server, node_client, stack, transports=transports,
                      auth_headers={"Cookie": "laravel_session=explicit"},
                      extra_headers={**HANDSHAKE, "Authorization": "Bearer from-handshake"}),
        # No cookie anywhere: no Cookie header.
        await _client(server, node_client, stack, transports=transports),
    ]
    for client, socket_id in tabs:
        # The handshake headers really reached the server (so their absence below means
        # something), and Echo.socketId() is the id the server knows.
        assert await client.socket_id() == socket_id
        await client.command({"cmd": "private", "channel": "orders"})
        await wait_member(server, "private-orders", socket_id)
    assert server.core.connections[tabs[1][1]].handshake.headers["authorization"] == \
        "Bearer from-handshake"

    calls = await auth_backend.wait_calls(3)
    expected: list[dict[str, str]] = [
        {"authorization": "Bearer api-token", "x-csrf-token": "csrf-token", "x-tenant": "acme",
         "cookie": "laravel_session=from-handshake"},
        {"cookie": "laravel_session=explicit"},
        {},
    ]
    for call, (_tab, socket_id), wanted in zip(calls, tabs, expected, strict=True):
        assert call.form == {"channel_name": "private-orders", "socket_id": socket_id}
        names = [name.lower() for name, _ in call.raw_headers]
        assert len(names) == len(set(names)), call.raw_headers  # no header sent twice
        headers = _lower(call)
        assert headers["x-requested-with"] == "XMLHttpRequest"
        assert headers["content-type"] == "application/x-www-form-urlencoded"
        assert headers.get("user-agent") != "Browser/1.0"
        forwarded = {k: v for k, v in headers.items()
                     if k not in CLIENT_LIBRARY_HEADERS
                     and k not in ("host", "content-type", "content-length", "x-requested-with")}
        assert forwarded == wanted


async def test_client_cannot_frame_the_auth_request(make_server: ServerFactory,
                                                    node_client: ClientFactory,
                                                    auth_backend: AuthBackend,
                                                    prefix: str) -> None:
    """``auth.headers`` is client input: a forged Content-Length or Host must not reach the
    backend, or the pooled connection would carry the rest of the body into the next
    user's auth request."""
    server = await _server(make_server, auth_backend, prefix)
    auth_backend.allow_private("private-orders")
    forged = {"Content-Length": "5", "Host": "admin.internal", "Content-Type": "application/json",
              "x-requested-with": "Fetch", "cookie": "laravel_session=lower-case"}
    bad, bad_id = await _client(server, node_client, auth_headers=forged,
                                extra_headers={"Cookie": "laravel_session=from-handshake"})
    good, good_id = await _client(server, node_client)
    for client, socket_id in ((bad, bad_id), (good, good_id)):
        await client.command({"cmd": "private", "channel": "orders"})
        await wait_member(server, "private-orders", socket_id)
    calls = await auth_backend.wait_calls(2)
    for call, socket_id in zip(calls, (bad_id, good_id), strict=True):
        assert call.form == {"channel_name": "private-orders", "socket_id": socket_id}
        headers = _lower(call)
        assert headers["host"] == auth_backend.url.removeprefix("http://")
        assert headers["content-type"] == "application/x-www-form-urlencoded"
        assert headers["x-requested-with"] == "XMLHttpRequest"
    cookies = [v for k, v in calls[0].raw_headers if k.lower() == "cookie"]
    assert cookies == ["laravel_session=lower-case"]


def test_forwarded_headers_unit() -> None:
    """What ``headers_for`` makes of odd ``auth.headers`` (no network)."""
    authorizer = HttpCallbackAuthorizer(["http://localhost"], "/broadcasting/auth")

    def headers(given: dict[str, str], handshake: dict[str, str]) -> dict[str, str]:
        return authorizer.headers_for(AuthRequest("private-x", "sid", given, handshake))

    assert headers({}, {"cookie": "c=1", "authorization": "Bearer h", "referer": "http://r"}) == \
        {"Cookie": "c=1", "X-Requested-With": "XMLHttpRequest"}
    # An empty Cookie is no cookie (the reference's ``||``): the handshake's is used.
    assert headers({"Cookie": ""}, {"cookie": "c=1"}) == \
        {"Cookie": "c=1", "X-Requested-With": "XMLHttpRequest"}
    assert headers({"COOKIE": "mine", "Transfer-Encoding": "chunked", "X-A": "1"},
                   {"cookie": "c=1"}) == \
        {"COOKIE": "mine", "X-A": "1", "X-Requested-With": "XMLHttpRequest"}


async def test_unsendable_header_is_a_refusal(make_server: ServerFactory,
                                              node_client: ClientFactory,
                                              auth_backend: AuthBackend, prefix: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A CR/LF in a header value cannot be sent: status 0, counted, no traceback."""
    server = await _server(make_server, auth_backend, prefix)
    auth_backend.allow_private("private-orders")
    client, _ = await _client(server, node_client,
                              auth_headers={"X-CSRF-TOKEN": "a\r\nX-Injected: 1"})
    await client.command({"cmd": "private", "channel": "orders"})
    await client.expect("subscription_error", channel="private-orders", status=0)
    assert auth_backend.calls == []
    assert server.errors.counts["auth_failed"] == 1
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# --------------------------------------------------------------------------- authHost by Referer

@pytest.mark.parametrize(("hosts", "referer", "chosen"), [
    pytest.param([], None, "http://localhost", id="empty-list"),
    pytest.param(["http://a.test", "http://b.test"], None, "http://a.test", id="no-referer"),
    pytest.param(["http://a.test", "http://b.test"], "", "http://a.test", id="empty-referer"),
    pytest.param(["http://a.test", "http://b.test"], "http://a.test/page", "http://a.test",
                 id="first-by-origin"),
    pytest.param(["http://a.test", "https://b.test:8443"], "https://b.test:8443/x?y=1",
                 "https://b.test:8443", id="by-origin"),
    pytest.param(["http://a.test", "b.test:8443"], "https://b.test:8443/x",
                 "https://b.test:8443", id="by-host-gives-referer-origin"),
    pytest.param(["http://a.test", ".example.com", "http://c.test"],
                 "https://app.example.com/x", "https://app.example.com",
                 id="by-hostname-from-first-dot"),
    pytest.param(["http://a.test", ".example.com", "http://c.test"],
                 "https://a.b.example.com/x", "http://c.test", id="first-dot-only"),
    pytest.param(["http://a.test", "http://b.test", "http://c.test"], "http://evil.test/",
                 "http://c.test", id="no-match-gives-last"),
    pytest.param(["http://a.test", "http://b.test"], "http://a.test:8080/", "http://b.test",
                 id="origin-includes-port"),
    pytest.param(["http://x.test", "t"], "http://localhost:3000/", "http://localhost:3000",
                 id="dotless-hostname-matches-its-last-character"),
])
def test_choose_auth_host(hosts: list[str], referer: str | None, chosen: str) -> None:
    """laravel-echo-server's ``authHost`` rule, quirks included (protocol sheet §4)."""
    assert choose_auth_host(hosts, referer) == chosen


async def test_auth_host_chosen_by_referer(make_server: ServerFactory,
                                           node_client: ClientFactory,
                                           auth_backend: AuthBackend, prefix: str) -> None:
    """Two Laravel apps behind one echo server: the handshake's Referer picks the app."""
    second = AuthBackend()
    await second.start()
    try:
        for backend in (auth_backend, second):
            backend.allow_private("private-orders")
        server = await _server(make_server, auth_backend, prefix,
                               authHost=[auth_backend.url, second.url])
        tabs = {
            "none": await _client(server, node_client),
            "second": await _client(server, node_client,
                                    extra_headers={"Referer": second.url + "/dashboard"}),
            "first": await _client(server, node_client,
                                   extra_headers={"Referer": auth_backend.url + "/"}),
            "other": await _client(server, node_client,
                                   extra_headers={"Referer": "http://elsewhere.test/"}),
        }
        for client, socket_id in tabs.values():
            await client.command({"cmd": "private", "channel": "orders"})
            await wait_member(server, "private-orders", socket_id)
        first = {c.form["socket_id"] for c in auth_backend.calls}
        other = {c.form["socket_id"] for c in second.calls}
        assert first == {tabs["none"][1], tabs["first"][1]}
        assert other == {tabs["second"][1], tabs["other"][1]}  # no match: the last entry
    finally:
        await second.stop()


# --------------------------------------------------------------------------- presence

@pytest.mark.parametrize("database", ["sqlite", "redis"])
async def test_presence_counts_users_not_tabs(make_server: ServerFactory,
                                              node_client: ClientFactory,
                                              redis: aioredis.Redis, auth_backend: AuthBackend,
                                              prefix: str, database: str) -> None:
    """User 1 in two tabs (ids ``1`` and ``"1"``), user 2 in one (Pusher-style
    ``channel_data``), one stack each: ``here`` lists users once, newest first; ``joining``
    comes with a user's first tab, ``leaving`` with the last; no socket id anywhere."""
    server = await _server(make_server, auth_backend, prefix, database=database)
    auth_backend.rules[ROOM] = _as_member
    join = {"cmd": "join", "channel": "room", "listen": [".marker"]}

    a, a_id = await _client(server, node_client, "echo1-sio2", raw=True, auth_headers=_user(1))
    await a.command(join)
    assert (await a.expect("presence_here"))["users"] == [_info(1)]
    raw = await a.expect("raw", event="presence:subscribed")
    assert raw["args"] == [ROOM, [{"user_id": 1, "user_info": _info(1)}]]

    c, c_id = await _client(server, node_client, "echo2-sio2", raw=True,
                            auth_headers=_user(2, pusher_style=True))
    await c.command(join)
    assert (await c.expect("presence_here"))["users"] == [_info(2), _info(1)]
    raw = await c.expect("raw", event="presence:subscribed")
    assert raw["args"] == [ROOM, [{"user_id": 2, "user_info": _info(2)},
                                  {"user_id": 1, "user_info": _info(1)}]]
    assert (await a.expect("presence_joining"))["user"] == _info(2)
    raw = await a.expect("raw", event="presence:joining")
    assert raw["args"] == [ROOM, {"user_id": 2, "user_info": _info(2)}]

    # User 1's second tab, with the id as a string: the same user, now the newest.
    b, b_id = await _client(server, node_client, "echo2-sio4", raw=True,
                            auth_headers=_user("1"))
    await b.command(join)
    assert (await b.expect("presence_here"))["users"] == [_info(1), _info(2)]
    raw = await b.expect("raw", event="presence:subscribed")
    assert raw["args"] == [ROOM, [{"user_id": "1", "user_info": _info(1)},
                                  {"user_id": 2, "user_info": _info(2)}]]
    await _publish(redis, prefix, ROOM, "marker", {"n": 1})
    for client in (a, c):  # a joining would have arrived before the marker
        await client.expect("event", data={"n": 1, "socket": None})
        assert not client.backlog("presence_joining")

    # User 1 closes one tab: still there. Then the other: gone.
    await a.close()
    await wait_gone(server, a_id)
    await server.core.drain()
    await _publish(redis, prefix, ROOM, "marker", {"n": 2})
    for client in (b, c):
        await client.expect("event", data={"n": 2, "socket": None})
        assert not client.backlog("presence_leaving")
    assert [m.user_id for m in await server.core.presence.store.members(ROOM)] == ["1", 2]

    await b.close()
    await wait_gone(server, b_id)
    assert (await c.expect("presence_leaving"))["user"] == _info(1)
    raw = await c.expect("raw", event="presence:leaving")
    assert raw["args"] == [ROOM, {"user_id": "1", "user_info": _info(1)}]
    await server.core.drain()
    assert [m.user_id for m in await server.core.presence.store.members(ROOM)] == [2]
    assert not c.backlog("presence_leaving")
    _assert_no_socket_ids([a, b, c], [a_id, b_id, c_id])


class RawMember:
    """A lightweight presence member: python-socketio (Engine.IO 4), no Echo, no Node."""

    def __init__(self, url: str, user_id: int) -> None:
        self.url = url
        self.user_id = user_id
        self.sio = socketio.AsyncClient(reconnection=False)
        self.subscribed = asyncio.Event()
        self.members: list[dict[str, Any]] = []
        self.sio.on("presence:subscribed", self._on_subscribed)

    def _on_subscribed(self, channel: str, members: list[dict[str, Any]]) -> None:
        self.members = members
        self.subscribed.set()

    async def connect(self) -> None:
        await self.sio.connect(self.url, transports=["websocket"])

    async def join(self, channel: str) -> None:
        await self.sio.emit("subscribe", {"channel": channel,
                                          "auth": {"headers": _user(self.user_id)}})


@pytest.mark.parametrize(("users", "instances", "late_on"), [
    pytest.param(50, 1, 0, id="50-users-one-instance"),
    pytest.param(50, 2, 0, id="50-users-two-instances-late-on-first"),
    pytest.param(50, 2, 1, id="50-users-two-instances-late-on-second"),
    # More writes at once than redis-py's pool has connections (100, and it raises
    # rather than waits): none may be lost.
    pytest.param(150, 1, 0, id="150-users-one-instance"),
])
async def test_simultaneous_joins_all_listed(make_server: ServerFactory,
                                             node_client: ClientFactory,
                                             auth_backend: AuthBackend, prefix: str, users: int,
                                             instances: int, late_on: int) -> None:
    """The reference loses members when joins overlap (GET then SET of one list). Here the
    auth answers of many users are released together, on one instance or on two sharing
    Redis, and every user appears in a late joiner's ``here()``, on either instance."""
    # Every user connects from 127.0.0.1, one address standing in for many: without this,
    # its fair share of the auth host (authMaxConnectionsPerAddress, 25) would apply to all.
    servers = [await _server(make_server, auth_backend, prefix, **DEFAULT_PING,
                             authMaxConnectionsPerAddress=100)
               for _ in range(instances)]
    auth_backend.rules[ROOM] = _as_member
    members = [RawMember(server_url(servers[n % instances]), n + 1) for n in range(users)]
    try:
        await asyncio.gather(*(m.connect() for m in members))
        auth_backend.gate = asyncio.Event()
        await asyncio.gather(*(m.join(ROOM) for m in members))
        # The authorizer keeps at most 100 requests open per instance; the rest follow.
        await auth_backend.wait_calls(min(users, 100 * instances), timeout=10)
        auth_backend.gate.set()  # the presence writes start at the same moment
        async with asyncio.timeout(10):
            await asyncio.gather(*(m.subscribed.wait() for m in members))
        stored = await servers[0].core.presence.store.members(ROOM)
        assert sorted(m.user_id for m in stored) == list(range(1, users + 1))

        late, _ = await _client(servers[late_on], node_client, auth_headers=_user(users + 1))
        await late.command({"cmd": "join", "channel": "room"})
        here = (await late.expect("presence_here", timeout=10))["users"]
        assert here[0] == _info(users + 1)  # newest first
        assert sorted(u["name"] for u in here) == \
            sorted(_info(n)["name"] for n in range(1, users + 2))
    finally:
        await asyncio.gather(*(m.sio.disconnect() for m in members), return_exceptions=True)


@pytest.mark.parametrize("database", ["sqlite", "redis"])
async def test_publish_presence(make_server: ServerFactory, node_client: ClientFactory,
                                redis: aioredis.Redis, auth_backend: AuthBackend, prefix: str,
                                database: str) -> None:
    """``databaseConfig.publishPresence``: every change of the member list is PUBLISHed,
    unprefixed, to ``PresenceChannelUpdated``, without socket ids."""
    pubsub = redis.pubsub()
    await pubsub.subscribe("PresenceChannelUpdated")
    try:
        server = await _server(make_server, auth_backend, prefix, database=database,
                               databaseConfig={"publishPresence": True})
        auth_backend.rules[ROOM] = _as_member

        async def next_update() -> dict[str, Any]:
            async with asyncio.timeout(5):
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=5)
                    if message is not None:
                        assert message["channel"] == b"PresenceChannelUpdated"
                        assert b"socketId" not in message["data"]
                        return json.loads(message["data"])

        def update(*user_ids: int) -> dict[str, Any]:
            return {"event": {"channel": f"{ROOM}:members", "members": [
                {"user_id": u, "user_info": _info(u)} for u in user_ids]}}

        a, _ = await _client(server, node_client, auth_headers=_user(1))
        await a.command({"cmd": "join", "channel": "room"})
        assert await next_update() == update(1)
        b, _ = await _client(server, node_client, "echo2-sio4", auth_headers=_user(2))
        await b.command({"cmd": "join", "channel": "room"})
        assert await next_update() == update(2, 1)
        await b.command({"cmd": "leave", "channel": "room"})
        assert await next_update() == update(1)
        await a.close()
        assert await next_update() == update()
    finally:
        await pubsub.aclose()


# --------------------------------------------------------------------------- ghosts

class HeldStore(PresenceStore):
    """Holds presence joins before or after the write, so a test can disconnect the socket
    while the write is in flight."""

    def __init__(self, inner: PresenceStore, hold: str) -> None:
        self.inner = inner
        self.hold = hold
        self.entered = 0
        self.release = asyncio.Event()

    async def join(self, channel: str, socket_id: str, member: Member) -> JoinResult:
        self.entered += 1
        if self.hold == "before":
            await self.release.wait()
        result = await self.inner.join(channel, socket_id, member)
        if self.hold == "after":
            await self.release.wait()
        return result

    async def leave(self, channel: str, socket_id: str, *,
                    unless_changed_since: int | None = None) -> LeaveResult:
        return await self.inner.leave(channel, socket_id,
                                      unless_changed_since=unless_changed_since)

    async def members(self, channel: str) -> list[Member]:
        return await self.inner.members(channel)


@pytest.mark.parametrize("database", ["sqlite", "redis"])
@pytest.mark.parametrize("moment", ["auth-pending", "write-pending", "write-landed",
                                    "subscribed-twice"])
async def test_disconnect_leaves_no_ghost(make_server: ServerFactory,
                                          node_client: ClientFactory, auth_backend: AuthBackend,
                                          prefix: str, database: str, moment: str) -> None:
    """User 1's tab closes while its join is in flight: during the auth request, after the
    200 while the presence write is pending or has landed, or with two subscribes in flight.
    Nobody hears of user 1, and a later joiner's ``here()`` does not list a ghost."""
    server = await _server(make_server, auth_backend, prefix, database=database)
    auth_backend.rules[ROOM] = _as_member
    observer, _ = await _client(server, node_client, "echo2-sio4", raw=True,
                                auth_headers=_user(2))
    await observer.command({"cmd": "join", "channel": "room"})
    await observer.expect("presence_here")

    store = HeldStore(server.core.presence.store, "before" if moment == "write-pending"
                      else "after")
    server.core.presence.store = store
    if moment == "auth-pending":
        auth_backend.gate = asyncio.Event()
    ghost, ghost_id = await _client(server, node_client, auth_headers=_user(1))
    subscribe = {"cmd": "socket_emit", "event": "subscribe",
                 "args": [{"channel": ROOM, "auth": {"headers": _user(1)}}]}
    await ghost.command(subscribe)
    if moment == "subscribed-twice":
        await wait_until(lambda: store.entered == 1, "the first presence write")
        await ghost.command(subscribe)
        # The second write waits for the first to be answered: they never overlap.
        await auth_backend.wait_calls(2)
        await wait_until(lambda: not server_socket(server, ghost_id).state.pending,
                         "the second authorization answered")
    elif moment == "auth-pending":
        await auth_backend.wait_calls(2)
    else:
        await wait_until(lambda: store.entered == 1, "the presence write")

    await ghost.close()
    await wait_gone(server, ghost_id)
    store.release.set()
    if auth_backend.gate is not None:
        auth_backend.gate.set()
    await server.core.drain()
    assert [m.user_id for m in await server.core.presence.store.members(ROOM)] == [2]

    late, _ = await _client(server, node_client, "echo2-sio2", auth_headers=_user(3))
    await late.command({"cmd": "join", "channel": "room"})
    assert (await late.expect("presence_here"))["users"] == [_info(3), _info(2)]
    assert (await observer.expect("presence_joining"))["user"] == _info(3)
    # Whatever happened to user 1, the observer heard nothing of it.
    assert [m["event"] for m in _raw_presence(observer)] == [
        "presence:subscribed", "presence:joining"]


# --------------------------------------------------------------------------- whispers

async def _raw_socket(server: EchoServer) -> tuple[RawWebSocket, str]:
    """An Engine.IO 3 websocket, as socket.io-client 2 opens it; frames are ours to batch."""
    ws = await RawWebSocket.connect(server)
    opened = await ws.recv_text()
    assert opened.startswith("0")
    assert await ws.recv_text() == "40"
    return ws, json.loads(opened[1:])["sid"]


def _emit(event: str, payload: Any) -> str:
    return "42" + json.dumps([event, payload])


async def test_whisper_rate_and_size_limits(make_server: ServerFactory,
                                            node_client: ClientFactory, redis: aioredis.Redis,
                                            auth_backend: AuthBackend, prefix: str) -> None:
    """10 whispers per second per socket (a burst of 15 relays 10, the rest is dropped and
    counted, other sockets unaffected); a whisper's data is bounded to 10,000 bytes of
    JSON, counted in UTF-8 bytes."""
    server = await _server(make_server, auth_backend, prefix, **DEFAULT_PING)
    auth_backend.allow_private("private-chat")
    receiver, receiver_id = await _client(server, node_client, "echo2-sio4")
    await receiver.command({"cmd": "private", "channel": "chat", "whisper_listen": ["typing"],
                            "listen": [".marker"]})
    await wait_member(server, "private-chat", receiver_id)
    flooder, flooder_id = await _raw_socket(server)
    other, other_id = await _raw_socket(server)
    big, big_id = await _raw_socket(server)
    try:
        for ws, socket_id in ((flooder, flooder_id), (other, other_id), (big, big_id)):
            ws.send_text(_emit("subscribe", {"channel": "private-chat"}))
            await wait_member(server, "private-chat", socket_id)

        def whisper(data: Any) -> str:
            return _emit("client event", {"channel": "private-chat", "event": "client-typing",
                                          "data": data})

        # One write: the server reads all 15 frames at once, well within a second.
        flooder.writer.write(b"".join(
            client_frame(OP_TEXT, whisper({"from": "flooder", "n": n}).encode())
            for n in range(15)))
        other.send_text(whisper({"from": "other", "n": 0}))
        # 10,000 bytes of JSON exactly (4,999 two-byte characters and two quotes), then one more.
        big.send_text(whisper("ü" * 4999))
        big.send_text(whisper("ü" * 4999 + "a"))
        big.send_text(whisper("ü" * 6000))  # 6,002 characters but 12,002 bytes
        await wait_until(lambda: server.errors.counts["oversized"] == 2, "oversized whispers")
        await wait_until(lambda: server.errors.counts["rate_limited"] == 5, "rate-limited")
        await _publish(redis, prefix, "private-chat", "marker", {"done": True})
        await receiver.expect("event", event=".marker")
        got = [m["data"] for m in receiver.history if m.get("type") == "whisper"]
        assert [d for d in got if isinstance(d, dict) and d["from"] == "flooder"] == [
            {"from": "flooder", "n": n} for n in range(10)]
        assert {"from": "other", "n": 0} in got
        assert [d for d in got if isinstance(d, str)] == ["ü" * 4999]
        assert len(got) == 12
        assert server.errors.counts["rate_limited"] == 5
        assert server.errors.counts["oversized"] == 2
    finally:
        for ws in (flooder, other, big):
            await ws.close()
