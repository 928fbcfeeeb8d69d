"""Laravel Echo's ``reverb`` and ``pusher`` broadcasters (pusher-js 8, the real npm
packages) on the same channels as socket.io Echo clients: Laravel's events reach both, a
presence channel lists and announces the members of both, whispers cross over, the
signature pusher-js brings from the app is checked, and an unknown app key is told 4001."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pusher
import pytest
import redis.asyncio as aioredis

from broadcaster.event import BroadcastEvent
from echo_server.adapters.pusher.endpoint import PusherEndpoint
from echo_server.config import ConfigError, load_config
from echo_server.process.server import EchoServer
from tests.conftest import (
    ServerFactory,
    free_port,
    laravel_message,
    requires_node,
    server_url,
)
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.node_client import NodeEchoClient
from tests.support.raw import RawWebSocket, pusher_client
from tests.support.raw import next_pusher_message as _next
from tests.support.waits import ClientFactory, wait_until

pytestmark = requires_node

KEY, SECRET = "lead-panel-key", "lead-panel-secret"
PRIVATE, PRESENCE = "private-admin-dashboard.1", "presence-leads-management"


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


def _signed(secret: str = SECRET) -> Any:
    """Laravel's Pusher driver answering /broadcasting/auth: the signature pusher-js sends
    on (socket.io clients get the member data alone, as from the Redis driver)."""
    def answer(call: AuthCall) -> dict[str, Any]:
        headers = {k.lower(): v for k, v in call.headers.items()}
        user_id = json.loads(headers.get("x-user-id", "0"))
        member = {"user_id": user_id, "user_info": {"name": f"admin {user_id}"}}
        if "." not in call.form.get("socket_id", "") or "x-socket-io" in headers:
            return {"channel_data": member}  # the server asks for a socket.io client
        text = f"{call.form['socket_id']}:{call.form['channel_name']}"
        body: dict[str, Any] = {}
        if call.form["channel_name"].startswith("presence-"):
            body["channel_data"] = json.dumps(member)
            text += ":" + body["channel_data"]
        body["auth"] = f"{KEY}:" + hmac.new(secret.encode(), text.encode(),
                                            hashlib.sha256).hexdigest()
        return body
    return answer


async def _server(make_server: ServerFactory, auth_backend: AuthBackend,
                  prefix: str) -> EchoServer:
    return await make_server({
        "authHost": auth_backend.url, "database": "redis",
        "databaseConfig": {"redis": {"keyPrefix": prefix}},
        "clients": [{"appId": "1001", "key": KEY, "secret": SECRET}]})


async def _pusher_page(node_client: ClientFactory, server: EchoServer, auth: AuthBackend,
                       stack: str, user: int) -> NodeEchoClient:
    page = await node_client(stack, server_url(server), auth_headers={"X-User-Id": str(user)},
                             extra_args=["--key", KEY, "--auth-endpoint",
                                         f"{auth.url}/broadcasting/auth"])
    connected = await page.expect("connected")
    assert connected["socketId"] and connected["socketId"].replace(".", "").isdigit()
    return page


@pytest.mark.parametrize("stack", ["echo2-reverb", "echo2-pusher"])
async def test_pusher_js_and_socket_io_share_channels(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str, stack: str) -> None:
    for channel in (PRIVATE, PRESENCE):
        auth_backend.rules[channel] = _signed()
    auth_backend.rules["private-refused"] = _signed("not-the-secret")
    server = await _server(make_server, auth_backend, prefix)
    sio = await node_client("echo2-sio4", server_url(server), transports="websocket",
                            auth_headers={"X-User-Id": "1", "X-Socket-Io": "1"})
    # With a Pusher app configured, socket.io ids too are ones pusher-php-server accepts.
    assert re.fullmatch(r"\d+\.\d+", (await sio.expect("connected"))["socketId"])
    await sio.command({"cmd": "join", "channel": "leads-management",
                       "whisper_listen": ["typing"]})
    await sio.expect("presence_here")

    page = await _pusher_page(node_client, server, auth_backend, stack, 2)
    await page.command({"cmd": "channel", "channel": "leads-management",
                        "listen": [".lead.assigned"]})
    await page.command({"cmd": "private", "channel": "admin-dashboard.1",
                        "listen": [".lead.assigned"]})
    await page.command({"cmd": "private", "channel": "refused", "listen": [".x"]})
    await page.command({"cmd": "join", "channel": "leads-management",
                        "whisper_listen": ["typing"]})
    here = await page.expect("presence_here")
    assert sorted(u["name"] for u in here["users"]) == ["admin 1", "admin 2"]
    assert (await sio.expect("presence_joining"))["user"] == {"name": "admin 2"}
    refused = await page.expect("subscription_error", channel="private-refused")
    assert refused["status"] == 401  # Echo's .error() fired: the error names the channel

    for channel, n in (("leads-management", 1), (PRIVATE, 2)):
        await redis.publish(prefix + channel, laravel_message("lead.assigned", {"lead": n}))
        got = await page.expect("event", channel=channel)
        assert got["data"] == {"lead": n, "socket": None}

    await page.command({"cmd": "whisper", "channel": PRESENCE, "event": "typing",
                        "data": {"lead": 101}})
    assert (await sio.expect("whisper"))["data"] == {"lead": 101}
    await sio.command({"cmd": "whisper", "channel": PRESENCE, "event": "typing",
                       "data": {"lead": 102}})
    assert (await page.expect("whisper"))["data"] == {"lead": 102}

    await page.close()
    assert (await sio.expect("presence_leaving"))["user"] == {"name": "admin 2"}


async def test_an_unknown_app_key_is_told_4001(make_server: ServerFactory,
                                               auth_backend: AuthBackend, prefix: str) -> None:
    server = await _server(make_server, auth_backend, prefix)
    ws = await RawWebSocket.connect(server, "protocol=7&client=js&version=8.4.0",
                                    path="/app/nobody")
    error = json.loads(await ws.recv_text())
    assert error == {"event": "pusher:error",
                     "data": {"code": 4001, "message": "App key does not exist"}}
    assert await ws.wait_closed() == 4001


@pytest.mark.parametrize("stack", ["echo2-reverb", "echo2-pusher"])
async def test_a_page_open_across_a_reload_meets_the_rotated_secret_then_the_removal(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        prefix: str, stack: str) -> None:
    """pusher-js opened under the old secret: after the reload, the app's signatures with
    the new secret admit it, a stale one's are refused (Echo's .error() fires); when the app
    is removed, it is told 4001 and does not come back."""
    server = await _server(make_server, auth_backend, prefix)
    page = await _pusher_page(node_client, server, auth_backend, stack, 2)
    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    options["clients"] = [{"appId": "1001", "key": KEY, "secret": "rotated-secret"}]
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()

    auth_backend.rules[PRIVATE] = _signed("rotated-secret")
    auth_backend.rules["private-stale"] = _signed()  # a Laravel node still on the old secret
    await page.command({"cmd": "private", "channel": "admin-dashboard.1",
                        "listen": [".lead.assigned"]})
    await page.command({"cmd": "private", "channel": "stale", "listen": [".x"]})
    assert (await page.expect("subscription_error", channel="private-stale"))["status"] == 401
    await wait_until(lambda: bool(server.core.rooms.members(PRIVATE)), "the page is in")
    server.publish(BroadcastEvent(PRIVATE, "lead.assigned", '{"lead":1}'))
    assert (await page.expect("event", channel=PRIVATE))["data"] == {"lead": 1}

    options["clients"] = [{"appId": "test-app", "key": "test-key"}]
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()
    await page.expect("disconnected")
    await page.expect_none("connected", within=1.0)
    assert not server.part(PusherEndpoint).connections


async def _raw_pusher(server: EchoServer) -> tuple[RawWebSocket, str]:
    return await pusher_client(server, KEY)


async def test_a_signed_in_user_gets_its_own_channel_and_nobody_else_does(
        make_server: ServerFactory, auth_backend: AuthBackend, prefix: str) -> None:
    server = await _server(make_server, auth_backend, prefix)
    me, socket_id = await _raw_pusher(server)
    user_data = json.dumps({"id": "7", "name": "Ayşe"})
    signature = hmac.new(SECRET.encode(), f"{socket_id}::user::{user_data}".encode(),
                         hashlib.sha256).hexdigest()
    me.send_text(json.dumps({"event": "pusher:signin",
                             "data": {"auth": f"{KEY}:{signature}", "user_data": user_data}}))
    assert await _next(me) == {"event": "pusher:signin_success",
                               "data": {"user_data": user_data}}
    me.send_text('{"event":"pusher:subscribe","data":{"channel":"#server-to-user-7"}}')
    assert (await _next(me))["event"] == "pusher_internal:subscription_succeeded"

    other, _ = await _raw_pusher(server)
    other.send_text(json.dumps({"event": "pusher:signin", "data": {
        "auth": f"{KEY}:{signature}", "user_data": user_data}}))  # someone else's signature
    assert (await _next(other))["data"]["code"] == 4009
    other.send_text('{"event":"pusher:subscribe","data":{"channel":"#server-to-user-7"}}')
    refused = await _next(other)
    assert (refused["event"], refused["channel"]) == ("pusher:subscription_error",
                                                      "#server-to-user-7")

    server.publish(BroadcastEvent("#server-to-user-7", "lead.assigned", '{"lead":{"id":1}}'))
    got = await _next(me)
    assert (got["event"], json.loads(got["data"])) == ("lead.assigned", {"lead": {"id": 1}})

    # terminate_connections (Pusher's HTTP API) finds a signed-in user's connections too.
    assert server.state.terminate_user("7") == 1
    assert (await _next(me))["data"]["code"] == 4009
    assert await me.wait_closed() == 4009


async def test_one_presence_channel_across_kinds_and_instances(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        auth_backend: AuthBackend, prefix: str) -> None:
    """A socket.io Echo page on one instance, a pusher-js Echo page on the other: each lists
    and hears the other, and Laravel's events reach both."""
    auth_backend.rules[PRESENCE] = _signed()
    options = {"authHost": auth_backend.url, "database": "redis",
               "databaseConfig": {"redis": {"keyPrefix": prefix}},
               "clients": [{"appId": "1001", "key": KEY, "secret": SECRET}],
               "cluster": {"heartbeatInterval": 200, "livenessTtl": 1000}}
    first, second = await make_server(options), await make_server(options)
    sio = await node_client("echo2-sio4", server_url(first), transports="websocket",
                            auth_headers={"X-User-Id": "1", "X-Socket-Io": "1"})
    await sio.expect("connected")
    await sio.command({"cmd": "join", "channel": "leads-management",
                       "listen": [".lead.assigned"]})
    await sio.expect("presence_here")
    page = await _pusher_page(node_client, second, auth_backend, "echo2-reverb", 2)
    await page.command({"cmd": "join", "channel": "leads-management",
                        "listen": [".lead.assigned"]})
    here = await page.expect("presence_here")
    assert sorted(u["name"] for u in here["users"]) == ["admin 1", "admin 2"]
    assert (await sio.expect("presence_joining"))["user"] == {"name": "admin 2"}

    await redis.publish(prefix + PRESENCE, laravel_message("lead.assigned", {"lead": 7}))
    for client in (sio, page):
        assert (await client.expect("event", channel=PRESENCE))["data"]["lead"] == 7

    await sio.close()
    assert (await page.expect("presence_leaving"))["user"] == {"name": "admin 1"}


class _At:
    """What RawWebSocket.connect needs of a server: its port."""

    def __init__(self, port: int) -> None:
        self.port = port


async def test_reverbs_env_is_served_on_its_port(tmp_path: Path) -> None:
    """`php artisan reverb:start`'s `.env`, unchanged: the app's key, its secret for the
    HTTP API, and REVERB_SERVER_PORT, where the frontend connects."""
    reverb_port = free_port()
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps(
        {"host": "127.0.0.1", "port": 0, "subscribers": {"http": True, "redis": False}}))
    (tmp_path / ".env").write_text(
        "REVERB_APP_ID=1001\nREVERB_APP_KEY=reverb-key\nREVERB_APP_SECRET=reverb-secret\n"
        f"REVERB_SERVER_HOST=127.0.0.1\nREVERB_SERVER_PORT={reverb_port}\n")
    server = EchoServer(load_config("laravel-echo-server.json", str(tmp_path), environ={},
                                    cwd=str(tmp_path)))
    await server.start()
    try:
        ws = await RawWebSocket.connect(_At(reverb_port), "protocol=7", path="/app/reverb-key")
        assert json.loads(await ws.recv_text())["event"] == "pusher:connection_established"
        ws.send_text('{"event":"pusher:subscribe","data":{"channel":"leads-management"}}')
        assert (await _next(ws))["event"] == "pusher_internal:subscription_succeeded"
        laravel = pusher.Pusher(app_id="1001", key="reverb-key", secret="reverb-secret",
                                host="127.0.0.1", port=reverb_port, ssl=False)
        await asyncio.to_thread(laravel.trigger, "leads-management", "lead.assigned",
                                {"lead": {"id": 5}})
        got = await _next(ws)
        assert (got["event"], json.loads(got["data"])) == ("lead.assigned", {"lead": {"id": 5}})
    finally:
        await server.stop()


async def test_with_jwt_required_a_pusher_connection_must_sign_in(
        make_server: ServerFactory) -> None:
    server = await make_server({
        "clients": [{"appId": "1001", "key": KEY, "secret": SECRET}],
        "jwt": {"secret": "x" * 32, "algorithms": ["HS256"], "required": True},
        "pusher": {"signinTimeoutMs": 200}}, redis=False)
    anonymous, _ = await _raw_pusher(server)
    member, socket_id = await _raw_pusher(server)
    user_data = json.dumps({"id": "7"})
    signature = hmac.new(SECRET.encode(), f"{socket_id}::user::{user_data}".encode(),
                         hashlib.sha256).hexdigest()
    member.send_text(json.dumps({"event": "pusher:signin", "data": {
        "auth": f"{KEY}:{signature}", "user_data": user_data}}))
    assert (await _next(member))["event"] == "pusher:signin_success"
    assert (await _next(anonymous))["data"]["code"] == 4009
    assert await anonymous.wait_closed() == 4009
    member.send_text('{"event":"pusher:ping","data":{}}')
    assert (await _next(member))["event"] == "pusher:pong"  # still connected


async def test_a_cache_channel_gives_its_last_event_or_says_there_is_none(
        make_server: ServerFactory, auth_backend: AuthBackend, prefix: str) -> None:
    server = await _server(make_server, auth_backend, prefix)
    first, _ = await _raw_pusher(server)
    first.send_text('{"event":"pusher:subscribe","data":{"channel":"cache-capacity"}}')
    assert (await _next(first))["event"] == "pusher_internal:subscription_succeeded"
    assert await _next(first) == {"event": "pusher:cache_miss", "channel": "cache-capacity"}
    server.publish(BroadcastEvent("cache-capacity", "admin.capacity.updated", '{"current":5}'))
    assert (await _next(first))["event"] == "admin.capacity.updated"

    later, _ = await _raw_pusher(server)
    later.send_text('{"event":"pusher:subscribe","data":{"channel":"cache-capacity"}}')
    assert (await _next(later))["event"] == "pusher_internal:subscription_succeeded"
    cached = await _next(later)
    assert (cached["event"], json.loads(cached["data"])) == ("admin.capacity.updated",
                                                             {"current": 5})


async def test_an_encrypted_channel_is_relayed_to_pusher_js_which_decrypts_it(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        prefix: str) -> None:
    """Laravel encrypts (the Python pusher package here, as pusher-php-server does with an
    encryption master key); the server relays what it cannot read; pusher-js decrypts with
    the shared secret the app's /broadcasting/auth gave it."""
    master_key = base64.b64encode(b"m" * 32).decode()
    channel = "private-encrypted-admin-dashboard.1"
    signed = _signed()

    def answer(call: AuthCall) -> dict[str, Any]:
        body = signed(call)
        body["shared_secret"] = base64.b64encode(hashlib.sha256(
            channel.encode() + base64.b64decode(master_key)).digest()).decode()
        return body

    auth_backend.rules[channel] = answer
    server = await _server(make_server, auth_backend, prefix)
    laravel = pusher.Pusher(app_id="1001", key=KEY, secret=SECRET, host="127.0.0.1",
                            port=server.port, ssl=False,
                            encryption_master_key_base64=master_key)
    page = await _pusher_page(node_client, server, auth_backend, "echo2-reverb", 1)
    await page.command({"cmd": "encrypted", "channel": "admin-dashboard.1",
                        "listen": [".lead.assigned"]})
    await wait_until(lambda: server.core.rooms.count(channel) >= 1, f"somebody joined {channel}")
    await asyncio.to_thread(laravel.trigger, channel, "lead.assigned", {"lead": {"id": 9}})
    got = await page.expect("event", channel=channel)
    assert got["data"] == {"lead": {"id": 9}}


async def test_pusher_js_with_an_unknown_key_stops_at_4001(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        prefix: str) -> None:
    server = await _server(make_server, auth_backend, prefix)
    page = await node_client("echo2-reverb", server_url(server),
                             extra_args=["--key", "not-an-app", "--auth-endpoint",
                                         f"{auth_backend.url}/broadcasting/auth"])
    await page.expect("connect_error")
    await wait_until(lambda: server.errors.counts.get("bad_request", 0) >= 1,
                     "the unknown key refused")
    # pusher-js does not reconnect after 4001: a retry would fail the same way, and the page
    # would say so, within a few of its fastest retry delays.
    await page.expect_none("connect_error", within=1.0)
    assert server.errors.counts["bad_request"] == 1


async def test_local_channel_rules_decide_for_signed_in_pusher_users(
        make_server: ServerFactory, auth_backend: AuthBackend, prefix: str) -> None:
    """`channels` rules read the signed-in user as they read a JWT user's claims: no
    signature needed where a rule decides, and a rule's refusal stands."""
    server = await make_server({
        "clients": [{"appId": "1001", "key": KEY, "secret": SECRET}],
        "channels": {"private-admin-dashboard.{id}": {"require": {"sub": "{id}"}}}},
        redis=False)
    ws, socket_id = await _raw_pusher(server)
    user_data = json.dumps({"id": "5", "name": "Mehmet"})
    signature = hmac.new(SECRET.encode(), f"{socket_id}::user::{user_data}".encode(),
                         hashlib.sha256).hexdigest()
    ws.send_text(json.dumps({"event": "pusher:signin", "data": {
        "auth": f"{KEY}:{signature}", "user_data": user_data}}))
    assert (await _next(ws))["event"] == "pusher:signin_success"
    for channel, answer in (("private-admin-dashboard.5", "pusher_internal:subscription_succeeded"),
                            ("private-admin-dashboard.6", "pusher:subscription_error")):
        ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        got = await _next(ws)
        assert (got["event"], got["channel"]) == (answer, channel)


async def test_an_apps_own_origins_quota_and_activity_timeout(
        make_server: ServerFactory) -> None:
    server = await make_server({"clients": [{
        "appId": "1001", "key": KEY, "secret": SECRET, "maxConnections": 1,
        "allowedOrigins": ["https://panel.example"], "activityTimeoutMs": 7000}]},
        redis=False)
    ws = await RawWebSocket.connect(server, "protocol=7", path=f"/app/{KEY}",
                                    headers={"Origin": "https://panel.example"})
    hello = json.loads(await ws.recv_text())
    assert json.loads(hello["data"])["activity_timeout"] == 7
    for origin, code in (("https://elsewhere.example", 4009), ("https://panel.example", 4004)):
        refused = await RawWebSocket.connect(server, "protocol=7", path=f"/app/{KEY}",
                                             headers={"Origin": origin})
        assert json.loads(await refused.recv_text())["data"]["code"] == code
        assert await refused.wait_closed() == code
    await ws.close()


def test_bad_pusher_app_options_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "laravel-echo-server.json").write_text(json.dumps({"clients": [{
        "appId": "1001", "key": KEY, "secret": SECRET, "maxConnections": "lots"}]}))
    with pytest.raises(ConfigError, match="maxConnections"):
        load_config("laravel-echo-server.json", str(tmp_path), environ={}, cwd=str(tmp_path))


HOSTILE = [
    "not json", "[]", "null", '{"event": 5}', '{"event":"pusher:subscribe","data":7}',
    '{"event":"pusher:subscribe","data":"{broken"}',
    '{"event":"pusher:subscribe","data":{"channel":["x"]}}',
    '{"event":"pusher:subscribe","data":{"channel":"\\ud800"}}',
    '{"event":"pusher:subscribe","data":{"channel":"private-x","auth":5}}',
    '{"event":"pusher:subscribe","data":{"channel":"presence-x","auth":"k:s","channel_data":9}}',
    '{"event":"pusher:signin","data":{"auth":["a"],"user_data":{}}}',
    '{"event":"pusher:unsubscribe","data":null}',
    '{"event":"client-x","channel":"private-nowhere","data":{"a":1}}',
    '{"event":"client-x","channel":7,"data":"\\udc00"}',
    '{"event":"pusher:nonsense"}',
    "[" * 2000 + "]" * 2000,
]


async def test_hostile_pusher_messages_get_errors_and_nobody_else_notices(
        make_server: ServerFactory, auth_backend: AuthBackend, prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    server = await _server(make_server, auth_backend, prefix)
    healthy, _ = await _raw_pusher(server)
    healthy.send_text('{"event":"pusher:subscribe","data":{"channel":"leads-management"}}')
    assert (await _next(healthy))["event"] == "pusher_internal:subscription_succeeded"
    attacker, _ = await _raw_pusher(server)
    for text in HOSTILE:
        attacker.send_text(text)
    attacker.send_text('{"event":"pusher:ping","data":{}}')
    while (await _next(attacker))["event"] != "pusher:pong":
        pass  # each hostile message got its error (or its refusal), then the pong
    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"n":1}'))
    assert (await _next(healthy))["event"] == "lead.assigned"
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere


async def test_a_non_ascii_key_in_a_signature_is_a_wrong_signature(
        make_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    """``hmac.compare_digest`` raises TypeError on non-ASCII text: such a key must be refused
    like any wrong one (the subscribe's error, sign-in's 4009), and the connection lives."""
    server = await make_server({"clients": [{"appId": "1001", "key": KEY, "secret": SECRET}]},
                               redis=False)
    ws, _ = await _raw_pusher(server)
    for n, auth in enumerate(["ключ:abc", f"{KEY}:подпись", "ключ:"] * 10):
        channel = f"{PRIVATE}{n}"
        ws.send_text(json.dumps({"event": "pusher:subscribe",
                                 "data": {"channel": channel, "auth": auth}}))
        refused = await _next(ws)
        assert (refused["event"], refused["channel"], refused["data"]["status"]) == (
            "pusher:subscription_error", channel, 401)
    for auth in ("ключ:abc", f"{KEY}:подпись"):
        ws.send_text(json.dumps({"event": "pusher:signin",
                                 "data": {"auth": auth, "user_data": '{"id":"7"}'}}))
        assert (await _next(ws))["data"]["code"] == 4009
    ws.send_text('{"event":"pusher:ping","data":{}}')
    assert (await _next(ws))["event"] == "pusher:pong"  # still connected
    assert not [r for r in caplog.records if r.exc_info]
    assert server.errors.counts["auth_failed"] == 32
    # Counted every time, logged at a bounded rate.
    assert len([r for r in caplog.records if "auth_failed" in r.getMessage()]) < 5


async def test_pusher_subscribes_follow_pushers_channel_names(make_server: ServerFactory) -> None:
    """Pusher's rule (`[A-Za-z0-9_\\-=@,.;]`, at most 200): anything else, a control
    character above all, is refused with the subscription's own error, named by the channel."""
    server = await make_server({"clients": [{"appId": "1001", "key": KEY, "secret": SECRET}]},
                               redis=False)
    ws, _ = await _raw_pusher(server)
    for channel in ("leads\nmanagement", "leads\x00", "leads management", "lead\u2028s",
                    "заявки", "user:5", "orders/7", "#orders", "c" * 201):
        ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        refused = await _next(ws)
        assert (refused["event"], refused["channel"], refused["data"]["status"]) == (
            "pusher:subscription_error", channel, 400), channel
    for channel in ("App.Models.User.5;x=y@z,w-_", "c" * 200):
        ws.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert await _next(ws) == {"event": "pusher_internal:subscription_succeeded",
                                   "channel": channel, "data": "{}"}
    assert server.errors.counts["bad_subscribe"] == 9


async def test_with_jwt_required_nothing_reaches_a_pusher_connection_before_sign_in(
        make_server: ServerFactory) -> None:
    """Its subscribes wait for the sign-in (pusher-js subscribes before it signs in, and
    never repeats a refused subscribe), then are made in order; until then no event of any
    channel reaches it."""
    server = await make_server({
        "clients": [{"appId": "1001", "key": KEY, "secret": SECRET}],
        "jwt": {"secret": "x" * 32, "algorithms": ["HS256"], "required": True},
        "pusher": {"signinTimeoutMs": 5000}}, redis=False)

    async def signed_in(ws: RawWebSocket, socket_id: str, user: str) -> None:
        user_data = json.dumps({"id": user})
        signature = hmac.new(SECRET.encode(), f"{socket_id}::user::{user_data}".encode(),
                             hashlib.sha256).hexdigest()
        ws.send_text(json.dumps({"event": "pusher:signin", "data": {
            "auth": f"{KEY}:{signature}", "user_data": user_data}}))
        assert (await _next(ws))["event"] == "pusher:signin_success"

    member, member_id = await _raw_pusher(server)
    await signed_in(member, member_id, "1")
    member.send_text('{"event":"pusher:subscribe","data":{"channel":"leads-management"}}')
    assert (await _next(member))["event"] == "pusher_internal:subscription_succeeded"

    anonymous, socket_id = await _raw_pusher(server)
    private_auth = f"{KEY}:" + hmac.new(SECRET.encode(), f"{socket_id}:{PRIVATE}".encode(),
                                        hashlib.sha256).hexdigest()
    for data in ({"channel": "leads-management"}, {"channel": "cache-capacity"},
                 {"channel": PRIVATE, "auth": private_auth}, {"channel": "dropped"}):
        anonymous.send_text(json.dumps({"event": "pusher:subscribe", "data": data}))
    anonymous.send_text('{"event":"pusher:unsubscribe","data":{"channel":"dropped"}}')
    anonymous.send_text('{"event":"pusher:ping","data":{}}')
    assert await _next(anonymous) == {"event": "pusher:pong", "data": {}}  # nothing before

    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"lead":1}'))
    assert (await _next(member))["event"] == "lead.assigned"
    anonymous.send_text('{"event":"pusher:ping","data":{}}')
    assert await _next(anonymous) == {"event": "pusher:pong", "data": {}}  # and nothing else

    await signed_in(anonymous, socket_id, "2")
    for channel in ("leads-management", "cache-capacity"):
        assert (await _next(anonymous))["channel"] == channel
    assert (await _next(anonymous))["event"] == "pusher:cache_miss"
    assert (await _next(anonymous))["channel"] == PRIVATE
    server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"lead":2}'))
    assert json.loads((await _next(anonymous))["data"]) == {"lead": 2}
    assert "dropped" not in server.core.rooms

    # What waits is bounded: as many subscribes as authorizations may be in flight.
    greedy, _ = await _raw_pusher(server)
    for n in range(101):
        greedy.send_text(json.dumps({"event": "pusher:subscribe", "data": {"channel": f"c{n}"}}))
    refused = await _next(greedy)
    assert (refused["event"], refused["channel"], refused["data"]["status"]) == (
        "pusher:subscription_error", "c100", 429)


async def test_what_waits_for_a_sign_in_is_bounded_in_bytes_and_freed_by_an_unsubscribe(
        make_server: ServerFactory) -> None:
    """Three large subscribes fill what may wait (64 KiB), the fourth is refused; one
    unsubscribed before the sign-in makes room for one more, not two."""
    server = await make_server({
        "clients": [{"appId": "1001", "key": KEY, "secret": SECRET}],
        "jwt": {"secret": "x" * 32, "algorithms": ["HS256"], "required": True},
        "pusher": {"signinTimeoutMs": 5000}}, redis=False)
    ws, _ = await _raw_pusher(server)

    def subscribe(channel: str) -> None:
        ws.send_text(json.dumps({"event": "pusher:subscribe",
                                 "data": {"channel": channel, "auth": "x" * 20_000}}))

    for n in range(4):
        subscribe(f"private-c{n}")
    refused = await _next(ws)
    assert (refused["event"], refused["channel"], refused["data"]["status"]) == (
        "pusher:subscription_error", "private-c3", 429)
    ws.send_text('{"event":"pusher:unsubscribe","data":{"channel":"private-c0"}}')
    subscribe("private-c4")
    subscribe("private-c5")
    refused = await _next(ws)
    assert (refused["event"], refused["channel"], refused["data"]["status"]) == (
        "pusher:subscription_error", "private-c5", 429)
