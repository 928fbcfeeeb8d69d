"""Pusher's HTTP API driven by the real Python ``pusher`` package (the same signed requests
as pusher-php-server, Laravel's ``reverb``/``pusher`` driver), checked on socket.io clients
connected to the server: what they receive, what the channel queries answer, a user's
connections terminated; and every refusal with Pusher's status: a wrong signature, a stale
timestamp, a body that is not the signed one, an unknown key, the app's public key on
laravel-echo-server's unsigned API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import pusher
import pusher.errors
import pusher.http
import pytest

from echo_server.config import ConfigError, load_config
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, server_url
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.raw import RawWebSocket, next_pusher_message, pusher_client
from tests.support.waits import wait_gone, wait_member

APP_ID, KEY, SECRET = "424242", "reverb-public-key", "reverb-secret"
PRESENCE = "presence-leads-management"
T = TypeVar("T")


async def _server(make_server: ServerFactory, auth_backend: AuthBackend,
                  **client: Any) -> EchoServer:
    def member(call: AuthCall) -> dict[str, Any]:
        user_id = json.loads(call.headers["X-User-Id"])
        return {"channel_data": {"user_id": user_id, "user_info": {"name": f"admin {user_id}"}}}

    auth_backend.rules[PRESENCE] = member
    return await make_server({
        "authHost": auth_backend.url, "database": "sqlite",
        "clients": [{"appId": "test-app", "key": "test-key"},
                    {"appId": APP_ID, "key": KEY, "secret": SECRET, **client}]}, redis=False)


def _pusher(server: EchoServer, **overrides: str) -> pusher.Pusher:
    settings = {"app_id": APP_ID, "key": KEY, "secret": SECRET, **overrides}
    return pusher.Pusher(host="127.0.0.1", port=server.port, ssl=False, **settings)


async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The package is blocking (requests): off the loop that runs the server."""
    return await asyncio.to_thread(function, *args, **kwargs)


def _send(client: pusher.Pusher, method: str, path: str, params: dict[str, Any], *,
          body: bytes | None = None, forged: bool = False) -> Any:
    """A request the package signs as it signs its own, for what its methods refuse to send
    (too many channels, a body that is no JSON) or send elsewhere (pusher-php-server's
    terminate path). ``body`` replaces the JSON of ``params``: signed, or ``forged`` (sent
    in place of the signed one)."""
    inner = client._pusher_client
    request = pusher.http.Request(inner, method, path, params)
    if body is not None:
        request.body = body
        if not forged:
            request.query_params = {}
            request._generate_auth()
    return inner.http.send_request(request)


async def _socket(server: EchoServer, *channels: str,
                  user: int | None = None) -> tuple[RawWebSocket, str]:
    """A socket.io 2 client (Engine.IO 3 websocket) subscribed to ``channels``."""
    ws = await RawWebSocket.connect(server)
    opened = await ws.recv_text()
    assert await ws.recv_text() == "40"
    socket_id = json.loads(opened[1:])["sid"]
    auth = {"headers": {"X-User-Id": json.dumps(user)}} if user is not None else {}
    for channel in channels:
        ws.send_text("42" + json.dumps(["subscribe", {"channel": channel, "auth": auth}]))
        await wait_member(server, channel, socket_id)
    return ws, socket_id


async def _disconnected(ws: RawWebSocket) -> None:
    """Until the server's Socket.IO disconnect (`41`: socket.io-client does not reconnect)
    and the end of the connection."""
    while await ws.recv_text() != "41":
        pass
    await ws.wait_closed()


async def _next_app_event(ws: RawWebSocket) -> list[Any]:
    """The next event that is no presence announcement."""
    while True:
        event = await ws.next_event()
        if not str(event[0]).startswith("presence:"):
            return event


# --------------------------------------------------------------------------- publishing

async def test_trigger_reaches_socketio_clients(make_server: ServerFactory,
                                                auth_backend: AuthBackend) -> None:
    """JSON data arrives as the value (as from Laravel's Redis broadcaster), other text as a
    string; to one channel or several at once."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    auth_backend.allow_private("private-admins")
    orders, _ = await _socket(server, "orders")
    admins, _ = await _socket(server, "private-admins")
    assert await _call(client.trigger, "orders", "order.shipped", {"order": {"id": 7}}) == {}
    assert await orders.next_event() == ["order.shipped", "orders", {"order": {"id": 7}}]
    await _call(client.trigger, "orders", "note", "not json, just text")
    assert await orders.next_event() == ["note", "orders", "not json, just text"]
    await _call(client.trigger, ["orders", "private-admins"], "lead.assigned", {"lead": 1})
    assert await orders.next_event() == ["lead.assigned", "orders", {"lead": 1}]
    assert await admins.next_event() == ["lead.assigned", "private-admins", {"lead": 1}]


async def test_trigger_batch(make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    ws, _ = await _socket(server, "orders", "invoices")
    result = await _call(client.trigger_batch, [
        {"channel": "orders", "name": "order.created", "data": {"id": 1}},
        {"channel": "invoices", "name": "invoice.paid", "data": "42"},
    ])
    assert result == {}
    assert await ws.next_event() == ["order.created", "orders", {"id": 1}]
    assert await ws.next_event() == ["invoice.paid", "invoices", 42]


async def test_an_event_named_as_a_presence_change_is_just_an_event(
        make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    """The core's presence changes travel with the events: a publisher naming its event
    as one (``:member_added``, as the core once named them) neither forges a join on the
    Socket.IO page nor breaks the Pusher wire (a traceback and a 500, before); the
    character the core's names begin with is refused in an event's name, as in a
    channel's."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    page, _sid = await _socket(server, "orders")
    ws, _ = await pusher_client(server, KEY)
    ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": "orders"}}))
    assert (await next_pusher_message(ws))["event"] == "pusher_internal:subscription_succeeded"
    for name in (":member_added", ":member_removed"):
        assert await _call(client.trigger, "orders", name, {"user_id": 9}) == {}
        assert await page.next_event() == [name, "orders", {"user_id": 9}]
        assert await next_pusher_message(ws) == {
            "event": name, "channel": "orders", "data": json.dumps({"user_id": 9})}
    with pytest.raises(pusher.errors.PusherBadRequest, match="control character"):
        await _call(client.trigger, "orders", "\x1fmember_added", {"user_id": 9})
    await _call(client.trigger, "orders", "after", {"n": 1})  # and nothing came before it
    assert await page.next_event() == ["after", "orders", {"n": 1}]
    assert (await next_pusher_message(ws))["event"] == "after"


async def test_socket_id_excludes_the_sender(make_server: ServerFactory,
                                             auth_backend: AuthBackend) -> None:
    """Laravel's toOthers(): the socket.io client whose id is sent does not get the event."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    sender, sender_id = await _socket(server, "orders")
    other, _ = await _socket(server, "orders")
    await _call(client.trigger, "orders", "order.updated", {"id": 1}, socket_id=sender_id)
    await _call(client.trigger, "orders", "order.closed", {"id": 1})
    assert await other.next_event() == ["order.updated", "orders", {"id": 1}]
    assert await other.next_event() == ["order.closed", "orders", {"id": 1}]
    assert await sender.next_event() == ["order.closed", "orders", {"id": 1}]


def _signed_bytes(client: pusher.Pusher, n: int, channel: str) -> bytes:
    """A trigger as the package signs it, as raw HTTP/1.1 bytes (kept alive)."""
    path = f"/apps/{APP_ID}/events"
    request = pusher.http.Request(client._pusher_client, "POST", path, {
        "name": "order.shipped", "data": json.dumps({"n": n}), "channels": [channel]})
    query = "&".join(f"{k}={v}" for k, v in request.query_params.items())
    body = request.body.encode() if isinstance(request.body, str) else request.body
    return (f"POST {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


async def test_pipelined_publishes_are_answered_and_delivered_in_order(
        make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    """Three publishes in one write on one kept-alive connection, then a fourth: each is
    answered `{}` in turn, on the same connection, and the events arrive in that order."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    ws, _ = await _socket(server, "orders")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"".join(_signed_bytes(client, n, "orders") for n in (1, 2, 3)))
        await writer.drain()
        for _ in range(3):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"keep-alive" in head
            assert await reader.readexactly(2) == b"{}"
        writer.write(_signed_bytes(client, 4, "orders"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
        assert await reader.readexactly(2) == b"{}"
    finally:
        writer.close()
    for n in (1, 2, 3, 4):
        assert await ws.next_event() == ["order.shipped", "orders", {"n": n}]


def _as_php(path: str, body: bytes, *, secret: str = SECRET, stamp: float | None = None,
            signed_body: bytes | None = None, params: list[tuple[str, str]] | None = None,
            sign_as_sent: bool = False) -> bytes:
    """A POST as pusher-php-server (Laravel's `pusher` and `reverb` drivers) and
    pusher-http-node send it: the signed parameters sorted, the HMAC-SHA256 hex of
    `POST\npath\n<them>` appended last as auth_signature, kept alive. ``params`` replaces
    the parameters sent (in their order); ``sign_as_sent`` signs them as sent, unsorted."""
    sent = params or sorted({
        "auth_key": KEY, "auth_timestamp": str(int(stamp or time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(signed_body or body).hexdigest()}.items())
    query = "&".join(f"{k}={v}" for k, v in sent)
    text = query if sign_as_sent else "&".join(f"{k}={v}" for k, v in sorted(dict(sent).items()))
    signature = hmac.new(secret.encode(), f"POST\n{path}\n{text}".encode(),
                         hashlib.sha256).hexdigest()
    return (f"POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


async def _answers(server: EchoServer, requests: bytes, count: int) -> list[tuple[int, bytes]]:
    """Each request's status and body, in order, on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(requests)
        answers = []
        for _ in range(count):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answers.append((int(head.split(b" ")[1]), await reader.readexactly(length)))
        return answers
    finally:
        writer.close()


async def test_publishes_signed_as_pusher_php_server(make_server: ServerFactory,
                                                     auth_backend: AuthBackend) -> None:
    """The query Laravel's drivers send is checked as it arrived (``pusher_auth.canonical``)
    and decides as any other: accepted when signed, and each refusal of the general path
    holds for it, also for a query whose parameters were signed in the order sent (not
    Pusher's sorted one) or with one of them repeated (where the last counts)."""
    server = await _server(make_server, auth_backend)
    ws, _ = await _socket(server, "orders")
    path = f"/apps/{APP_ID}/events"

    def event(n: int) -> bytes:
        return json.dumps({"name": "order.shipped", "data": json.dumps({"n": n}),
                           "channels": ["orders"]}).encode()

    accepted = await _answers(server, b"".join(_as_php(path, event(n)) for n in (1, 2, 3)), 3)
    assert accepted == [(200, b"{}")] * 3
    now = str(int(time.time()))
    md5 = hashlib.md5(event(0)).hexdigest()
    unsorted = [("auth_timestamp", now), ("auth_key", KEY), ("auth_version", "1.0"),
                ("body_md5", md5)]
    repeated = [("auth_key", KEY), ("auth_timestamp", now), ("auth_version", "1.0"),
                ("body_md5", md5), ("body_md5", "0" * 32)]
    refused = [
        (_as_php(path, event(0), secret="not-the-secret"), b"Invalid signature"),
        (_as_php(path, event(0), params=unsorted, sign_as_sent=True), b"Invalid signature"),
        (_as_php(path, event(0), params=repeated, sign_as_sent=True), b"Invalid signature"),
        (_as_php(path, event(0), stamp=time.time() - 601), b"Timestamp expired"),
        (_as_php(path, event(0), signed_body=event(9)), b"Invalid body_md5"),
    ]
    for request, message in refused:
        [(status, body)] = await _answers(server, request, 1)
        assert status == 401 and body.startswith(message), (status, body)
    assert await _answers(server, _as_php(path, event(4)), 1) == [(200, b"{}")]
    for n in (1, 2, 3, 4):  # and nothing refused in between
        assert await ws.next_event() == ["order.shipped", "orders", {"n": n}]


async def test_a_reloaded_secret_signs_at_once(make_server: ServerFactory,
                                               auth_backend: AuthBackend) -> None:
    """The apps are looked up in a table kept per configuration: a reload's new secret is
    the one that signs from the next request on, and the old one is refused."""
    server = await _server(make_server, auth_backend)
    ws, _ = await _socket(server, "orders")
    assert await _call(_pusher(server).trigger, "orders", "before", {}) == {}
    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    options["clients"][1]["secret"] = "a-new-secret"
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()
    with pytest.raises(pusher.errors.PusherBadAuth):
        await _call(_pusher(server).trigger, "orders", "old secret", {})
    await _call(_pusher(server, secret="a-new-secret").trigger, "orders", "after", {})
    assert [(await ws.next_event())[0] for _ in range(2)] == ["before", "after"]


# --------------------------------------------------------------------------- queries

async def test_channels_channel_and_users(make_server: ServerFactory,
                                          auth_backend: AuthBackend) -> None:
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    sockets = [await _socket(server, PRESENCE, "orders", user=1),
               await _socket(server, PRESENCE, user=1), await _socket(server, PRESENCE, user=2)]

    assert await _call(client.channels_info) == {"channels": {PRESENCE: {}, "orders": {}}}
    assert await _call(client.channels_info, "presence-", ["user_count"]) == {
        "channels": {PRESENCE: {"user_count": 2}}}
    assert await _call(client.channel_info, PRESENCE,
                       ["user_count", "subscription_count"]) == {
        "occupied": True, "user_count": 2, "subscription_count": 3}
    assert await _call(client.channel_info, "orders", ["subscription_count"]) == {
        "occupied": True, "subscription_count": 1}
    assert await _call(client.channel_info, "nobody-here") == {"occupied": False}
    users = await _call(client.users_info, PRESENCE)
    assert sorted(u["id"] for u in users["users"]) == ["1", "2"]

    with pytest.raises(pusher.errors.PusherBadRequest, match="presence channels"):
        await _call(client.users_info, "orders")
    with pytest.raises(pusher.errors.PusherBadRequest, match="filter_by_prefix=presence-"):
        await _call(client.channels_info, None, ["user_count"])
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence channels"):
        await _call(client.channel_info, "orders", ["user_count"])
    assert len(sockets) == 3  # open until here


async def test_terminate_connections(make_server: ServerFactory,
                                     auth_backend: AuthBackend) -> None:
    """Every connection of the user closes (socket.io clients are told the server
    disconnected them, so they do not reconnect); other users stay. The Python package's
    path (`/users/{id}/…`) and pusher-php-server's (`/apps/{id}/users/{id}/…`) both work."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    first, first_id = await _socket(server, PRESENCE, user=1)
    second, second_id = await _socket(server, PRESENCE, user=1)
    stays, stays_id = await _socket(server, PRESENCE, "orders", user=2)

    assert await _call(client.terminate_user_connections, "1") == {}
    for ws, socket_id in ((first, first_id), (second, second_id)):
        await _disconnected(ws)
        await wait_gone(server, socket_id)
    users = await _call(client.users_info, PRESENCE)
    assert users == {"users": [{"id": "2"}]}

    await _call(client.trigger, "orders", "still.here", {})
    assert await _next_app_event(stays) == ["still.here", "orders", {}]
    path = f"/apps/{APP_ID}/users/2/terminate_connections"
    assert await _call(_send, client, "POST", path, {}) == {}
    await _disconnected(stays)
    await wait_gone(server, stays_id)
    assert await _call(client.channels_info) == {"channels": {}}


# --------------------------------------------------------------------------- refusals

async def test_bad_credentials_are_refused_and_publish_nothing(
        make_server: ServerFactory, auth_backend: AuthBackend,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = await _server(make_server, auth_backend)
    ws, _ = await _socket(server, "orders")
    refusals: list[tuple[type[Exception], str, Callable[[], Any]]] = [
        (pusher.errors.PusherBadAuth, "Invalid signature",
         lambda: _pusher(server, secret="not-the-secret").trigger("orders", "x", {})),
        (pusher.errors.PusherBadAuth, "Unknown auth_key",
         lambda: _pusher(server, key="no-such-key").trigger("orders", "x", {})),
        (pusher.errors.PusherBadAuth, "does not belong to app 999",
         lambda: _pusher(server, app_id="999").trigger("orders", "x", {})),
        (pusher.errors.PusherBadAuth, "Invalid body_md5",
         lambda: _send(_pusher(server), "POST", f"/apps/{APP_ID}/events",
                       {"name": "x", "channel": "orders", "data": "{}"},
                       body=b'{"name":"x","channel":"orders","data":"{\\"forged\\":1}"}',
                       forged=True)),
    ]
    for error, message, call in refusals:
        with pytest.raises(error, match=message):
            await _call(call)
    # The package signs with time.time(); its clock alone goes 601 s back, then ahead.
    for skew in (-601, 601):
        monkeypatch.setattr(pusher.http, "time",
                            SimpleNamespace(time=lambda skew=skew: time.time() + skew))
        with pytest.raises(pusher.errors.PusherBadAuth, match="Timestamp expired"):
            await _call(_pusher(server).trigger, "orders", "x", {})
    monkeypatch.undo()
    await _call(_pusher(server).trigger, "orders", "after", {})
    assert await ws.next_event() == ["after", "orders", {}]  # nothing refused got through


async def test_pusher_bounds(make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    """Pusher's limits, with its answers: at most 100 channels per event, 10 events per
    batch, 10 KB of data; a channel name the core would refuse; a request body that is not
    a publish."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    ws, _ = await _socket(server, "orders")
    events = f"/apps/{APP_ID}/events"
    refused: list[tuple[type[Exception], str, Callable[[], Any]]] = [
        (pusher.errors.PusherBadRequest, "at most 100",
         lambda: _send(client, "POST", events, {
             "name": "x", "data": "{}", "channels": [f"c{i}" for i in range(101)]})),
        (pusher.errors.PusherBadRequest, "at most 10 per batch",
         lambda: client.trigger_batch([{"channel": "orders", "name": "x", "data": {}}] * 11)),
        (pusher.errors.PusherBadStatus, "413: Payload too large",
         lambda: client.trigger("orders", "x", "y" * 10_241)),
        (pusher.errors.PusherBadRequest, "Invalid channel",
         lambda: _send(client, "POST", events, {"name": "x", "data": "{}",
                                                "channel": "c" * 201})),
        (pusher.errors.PusherBadRequest, "data must be a string",
         lambda: _send(client, "POST", events, {"name": "x", "data": {"id": 1},
                                                "channel": "orders"})),
        (pusher.errors.PusherBadRequest, "name must be",
         lambda: _send(client, "POST", events, {"data": "{}", "channel": "orders"})),
        (pusher.errors.PusherBadRequest, "must be JSON",
         lambda: _send(client, "POST", events, {}, body=b"{not json")),
        # Nested beyond what any parser takes, or only as deep as orjson does, as a channel:
        # nothing takes a value that deep out of the body or encodes it again.
        (pusher.errors.PusherBadRequest, "must be JSON",
         lambda: _send(client, "POST", events, {}, body=(
             '{"name":"x","data":"{}","channel":"orders","more":' + "[" * 3000 + "]" * 3000
             + "}").encode())),
        (pusher.errors.PusherBadRequest, "Invalid channel",
         lambda: _send(client, "POST", events, {}, body=(
             '{"name":"x","data":"{}","channels":[' + "[" * 1000 + "]" * 1000
             + "]}").encode())),
    ]
    for error, message, call in refused:
        with pytest.raises(error, match=message):
            await _call(call)
    await _call(client.trigger, "orders", "within", "y" * 10_240)
    assert await ws.next_event() == ["within", "orders", "y" * 10_240]


async def test_channel_names_follow_pushers_rules(make_server: ServerFactory,
                                                  auth_backend: AuthBackend) -> None:
    """Pusher's rule for a name (`[A-Za-z0-9_\\-=@,.;]`, at most 200) on every route that
    takes one, as on a subscribe: a control character never reaches a client, a key or a
    log; refused with Pusher's 400, and nothing of the request is published."""
    server = await _server(make_server, auth_backend)
    client = _pusher(server)
    ws, _ = await _socket(server, "orders")
    apps = f"/apps/{APP_ID}"
    for bad in ("orders\nforged", "orders\x00", "or ders", "orders\u2028", "заказы", "a:b"):
        for method, path, params in (
                ("POST", f"{apps}/events", {"name": "x", "data": "{}",
                                            "channels": ["orders", bad]}),
                ("POST", f"{apps}/batch_events", {"batch": [
                    {"channel": "orders", "name": "x", "data": "{}"},
                    {"channel": bad, "name": "x", "data": "{}"}]}),
                ("GET", f"{apps}/channels/{bad}", {}),
                ("GET", f"{apps}/channels/{bad}/users", {}),
                ("GET", f"{apps}/channels", {"filter_by_prefix": bad})):
            with pytest.raises(pusher.errors.PusherBadRequest, match="Invalid channel"):
                await _call(_send, client, method, path, params)
    await _call(client.trigger, ["orders", "#server-to-user-7", "private-App.Models.User.5"],
                "after", {})
    assert await ws.next_event() == ["after", "orders", {}]  # the first to arrive


async def test_the_public_key_no_longer_opens_the_unsigned_api(
        make_server: ServerFactory, auth_backend: AuthBackend) -> None:
    """A Pusher app's key ships in every page's JavaScript: laravel-echo-server's own API
    (and the status page) take only the app's separate `apiKey`; other apps' keys as ever."""
    server = await _server(make_server, auth_backend, apiKey="private-api-key")
    base = server_url(server)
    event = {"channel": "orders", "name": "order.shipped", "data": {"id": 1}}
    async with aiohttp.ClientSession() as http:
        for key, status in ((KEY, 403), ("private-api-key", 200)):
            async with http.post(f"{base}/apps/{APP_ID}/events?auth_key={key}",
                                 json=event) as response:
                assert response.status == status, key
            async with http.get(f"{base}/apps/{APP_ID}/channels",
                                headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status == status, key
            async with http.get(f"{base}/status.json?auth_key={key}") as response:
                assert response.status == status, key
        async with http.get(f"{base}/apps/test-app/status?auth_key=test-key") as response:
            assert response.status == 200


@pytest.mark.parametrize(("entry", "name"), [
    ({"secret": ""}, "secret"), ({"secret": 42}, "secret"),
    ({"secret": "s", "apiKey": None}, "apiKey"),
])
def test_a_secret_or_api_key_that_is_no_string_stops_the_start(
        tmp_path: Path, entry: dict[str, Any], name: str) -> None:
    """A secret that signs nothing, or an apiKey nobody can send, is a mistake to stop at,
    not an app that silently refuses every request."""
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps(
        {"clients": [{"appId": APP_ID, "key": KEY, **entry}]}))
    with pytest.raises(ConfigError, match=rf"`clients\[0\]\.{name}` must be a non-empty"):
        load_config(directory=str(tmp_path), environ={}, cwd=str(tmp_path))
