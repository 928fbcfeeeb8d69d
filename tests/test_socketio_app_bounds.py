"""An isolated app's own bounds hold for its Socket.IO pages as for its Pusher clients, each
refusal in the protocol's own words: ``maxConnections`` is one figure for both protocols,
refused at the CONNECT (socket.io-client 4's ``connect_error``, 2's ``error``) and given back
whenever a socket goes; ``allowedOrigins`` at the handshake (403, as ``socketio.origins``);
``maxChannelsPerConnection`` in Echo's error callback (4300, Pusher's status); client events
turned off or over ``maxClientEventsPerSecond`` dropped and counted. The default app's pages
on the same server meet none of them. Real laravel-echo on socket.io-client 2 and 4."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from echo_server.apps.tags import tag_of
from echo_server.process.server import EchoServer
from echo_server.transport.engine import EngineServer
from tests.conftest import ServerFactory, requires_node, server_url
from tests.support.auth_backend import AuthBackend
from tests.support.http import http_client
from tests.support.raw import (
    RawWebSocket,
    pusher_client,
    reset,
    socketio_client,
    token_handshake,
)
from tests.support.waits import ClientFactory, wait_until
from tests.test_jwt_auth import AUDIENCE, ISSUER, RSA_KEY, JwksServer, jwk_of, jwks_server, rs_token

__all__ = ["jwks_server"]  # the fixture, used by name

PATH = "/tenant/socket.io"
TENANT = {"appId": "5001", "key": "tenant-key", "secret": "tenant-secret",
          "socketioPath": PATH, "hosts": ["tenant.test"],
          "maxConnections": 2, "maxConnectionsPerAddress": 2}
SEATS = tag_of(TENANT["appId"])  # what its seats count under: its id (apps/seats.py)
OVER_QUOTA = "App is over its connection quota (maxConnections)"
RECOVERY = {"socketio": {"connectionStateRecovery": {"maxDisconnectionDuration": 10_000}}}
STACKS = ["echo2-sio4", "echo2-sio2"]
CONNECTIONS = 40  # handshakes verifying their token at once


def _refusal_event(stack: str) -> str:
    """What the page reports a refused CONNECT as: socket.io-client 2 emits ``error``."""
    return "connect_error" if stack.endswith("sio4") else "socket_error"


def _seats_back(server: EchoServer) -> bool:
    return server.seats.count(SEATS) == 0 and not server.seats.per_address[SEATS]


async def _pusher_refused(server: EchoServer, key: str,
                          headers: dict[str, str] | None = None) -> int:
    ws = await RawWebSocket.connect(server, "protocol=7", path=f"/app/{key}", headers=headers)
    message = json.loads(await ws.recv_text())
    assert message["event"] == "pusher:error", message
    return int(message["data"]["code"])


async def _refused_connect(server: EchoServer, path: str, query: str = "",
                           headers: dict[str, str] | None = None) -> str:
    """The refusal an Engine.IO 4 websocket's CONNECT at ``path`` gets."""
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket" + query, path=path,
                                    headers=headers)
    assert (await ws.recv_text()).startswith("0")
    ws.send_text("40")
    reply = await ws.recv_text()
    assert reply.startswith("44"), reply
    await ws.close()
    return str(json.loads(reply[2:])["message"])


# --------------------------------------------------------------------------- maxConnections


@requires_node
@pytest.mark.parametrize("stack", STACKS)
async def test_max_connections_counts_pusher_clients_and_socket_io_pages_together(
        make_server: ServerFactory, node_client: ClientFactory, stack: str) -> None:
    """maxConnections 2: a pusher-js client and a Socket.IO page take both seats; the next
    page is refused naming the bound, as is the next Pusher client (4004); the default
    app's pages come in all along; once the Pusher client leaves, a page gets its seat."""
    server = await make_server({"apps": [TENANT]}, redis=False)
    pusher_ws, _ = await pusher_client(server, TENANT["key"])
    page = await node_client(stack, server_url(server), echo_options={"path": PATH})
    await page.expect("connected")
    over = await node_client(stack, server_url(server), echo_options={"path": PATH},
                             reconnection=False)
    assert (await over.expect(_refusal_event(stack)))["message"] == OVER_QUOTA
    assert await _pusher_refused(server, TENANT["key"]) == 4004
    for _ in range(3):  # the default app's pages: its bounds are not theirs
        default = await node_client(stack, server_url(server))
        await default.expect("connected")
    await pusher_ws.close()
    await wait_until(lambda: server.seats.count(SEATS) == 1, "the seat given back")
    late = await node_client(stack, server_url(server), echo_options={"path": PATH})
    await late.expect("connected")


async def test_every_seat_a_socket_took_comes_back(make_server: ServerFactory) -> None:
    """Pages at the app's path and at its host name, Engine.IO 3 and 4, open and close
    again and again (some over the bound, refused); one is recovered after a drop; then
    the app's endpoints change hands in a reload: each time the count returns to what is
    open, and at the end to 0."""
    app = {**TENANT, "maxConnections": 5, "maxConnectionsPerAddress": 5}
    server = await make_server({"apps": [app], **RECOVERY}, redis=False)
    for _ in range(3):
        opened = [await socketio_client(server, path=PATH + "/") for _ in range(3)]
        opened += [await socketio_client(server, headers={"Host": "tenant.test"})]
        eio3 = await RawWebSocket.connect(server, path=PATH + "/")
        assert (await eio3.recv_text()).startswith("0") and await eio3.recv_text() == "40"
        assert await _refused_connect(server, PATH + "/") == OVER_QUOTA
        assert server.seats.count(SEATS) == 5
        await eio3.close()
        for ws, _ in opened[:2]:
            ws.writer.transport.abort()  # dropped: parked for a recovery, no seat held
        for ws, _ in opened[2:]:
            await ws.close()
        await wait_until(lambda: _seats_back(server), "every seat back")
    # Recovered: the session comes back as the same socket, in one seat.
    ws, hello = await socketio_client(server, path=PATH + "/")
    ws.writer.transport.abort()
    sessions = server.core.sessions
    assert sessions is not None
    await wait_until(lambda: any(p.id == hello["sid"] for p in sessions.parked.values()),
                     "the drop noticed")
    back, again = await socketio_client(server, "40" + json.dumps({"pid": hello["pid"]}),
                                        path=PATH + "/")
    assert again == hello
    assert server.seats.count(SEATS) == 1
    by_host, _ = await socketio_client(server, headers={"Host": "tenant.test"})
    assert server.seats.count(SEATS) == 2
    # Its path and its host name now another app's: both sockets closed, their seats back.
    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    options["apps"] = [{**app, "socketioPath": "/moved/socket.io", "hosts": []},
                       {"appId": "5009", "key": "other-key", "secret": "other-secret",
                        "socketioPath": PATH, "hosts": ["tenant.test"]}]
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()
    for closed in (back, by_host):
        assert await closed.wait_closed() in (None, 1000, 1005)
    await wait_until(lambda: _seats_back(server), "every seat back")
    # Only its seats were ever counted: the default app's sockets take none.
    await socketio_client(server)
    assert server.seats.own() == {}


@pytest.mark.parametrize("moment", ["while-verifying", "as-verified"])
async def test_no_seat_is_kept_by_sockets_gone_or_refused_as_their_token_is_verified(
        make_server: ServerFactory, jwks_server: JwksServer, moment: str) -> None:
    """Handshakes at the app's path wait for a real JWKS endpoint, and their clients walk
    away while they wait, or as they are let through one after another; a bad token is
    refused: no seat stays taken."""
    jwks_server.keys = [jwk_of(RSA_KEY, "k1", "RS256")]
    jwks_server.gate = asyncio.Event()
    jwt = {"jwks_url": jwks_server.url, "algorithms": ["RS256"], "issuer": ISSUER,
           "audience": AUDIENCE}
    server = await make_server({"apps": [{**TENANT, "maxConnections": 100,
                                          "maxConnectionsPerAddress": 100}], "jwt": jwt},
                               redis=False)
    assert "token" in await _refused_connect(server, PATH + "/", "&token=not.a.token")
    token = rs_token(kid="k1")
    writers = [await token_handshake(server, token, PATH + "/") for _ in range(CONNECTIONS)]
    await wait_until(lambda: len(server.part(EngineServer).sessions) == CONNECTIONS
                     and jwks_server.requests == 1, "every handshake verifying")
    if moment == "as-verified":
        jwks_server.gate.set()
        await wait_until(lambda: bool(server.core.connections), "some let through")
    for writer in writers:
        reset(writer)
    await wait_until(lambda: not server.part(EngineServer).sessions, "every session closed")
    jwks_server.gate.set()
    # One more, let through after all of them: then it alone holds a seat, and none once gone.
    last, _ = await socketio_client(server, path=PATH + "/", connect="40" + json.dumps(
        {"token": token}))
    assert server.seats.count(SEATS) == 1
    await last.close()
    await wait_until(lambda: _seats_back(server), "no seat kept")


async def test_seats_held_through_a_key_rotation_still_count(make_server: ServerFactory) -> None:
    """maxConnections 2, both seats held by Socket.IO pages, which stay open when their app's
    key is rotated (they never name it): a Pusher client with the new key is refused with
    4004 (the old key is no app now: 4001); once a page leaves, the new key's client gets its
    seat, and the pages' seats come back as they go."""
    server = await make_server({"apps": [TENANT]}, redis=False)
    pages = [await socketio_client(server, path=PATH + "/") for _ in range(2)]
    path = Path(server.config.config_file)
    options = json.loads(path.read_text())
    options["apps"] = [{**TENANT, "key": "rotated-key"}]
    path.write_text(json.dumps(options))
    assert await server.reloader.reload()
    assert await _pusher_refused(server, "rotated-key") == 4004
    assert await _pusher_refused(server, TENANT["key"]) == 4001
    await pages.pop()[0].close()
    await wait_until(lambda: server.seats.count(SEATS) == 1, "the page's seat given back")
    rotated, _ = await pusher_client(server, "rotated-key")
    assert await _pusher_refused(server, "rotated-key") == 4004
    for ws in (rotated, pages[0][0]):
        await ws.close()
    await wait_until(lambda: _seats_back(server), "every seat back")


async def test_one_clients_share_is_its_ipv6_64(make_server: ServerFactory) -> None:
    """maxConnectionsPerAddress 2, through a trusted proxy (the test's own address): two
    addresses of one /64 are one client, whose third connection, Pusher's or Socket.IO's, is
    refused as over its share (4100); an address of another /64 is another client."""
    app = {**TENANT, "maxConnections": 10}
    server = await make_server({"apps": [app], "trustedProxies": ["127.0.0.1"]}, redis=False)

    def at(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": address}

    held = [await pusher_client(server, app["key"], at("2001:db8:1:2::1")),
            await socketio_client(server, path=PATH + "/", headers=at("2001:db8:1:2:ffff::9"))]
    assert await _pusher_refused(server, app["key"], at("2001:db8:1:2::3")) == 4100
    assert "maxConnectionsPerAddress" in await _refused_connect(
        server, PATH + "/", headers=at("2001:db8:1:2:0:0:0:4"))
    held += [await pusher_client(server, app["key"], at("2001:db8:1:3::1")),
             await socketio_client(server, path=PATH + "/", headers=at("2001:db8:1:3::2"))]
    assert server.seats.per_address[SEATS] == {"2001:db8:1:2::/64": 2, "2001:db8:1:3::/64": 2}
    for ws, _ in held:
        await ws.close()
    await wait_until(lambda: _seats_back(server), "every seat back")


# --------------------------------------------------------------------------- allowedOrigins


async def _handshake(server: EchoServer, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http_client() as http, http.get(
            f"{server_url(server)}{path}?EIO=4&transport=polling", headers=headers) as response:
        body = await response.text()
        return response.status, json.loads(body) if response.status != 200 else None


async def test_an_isolated_apps_allowed_origins_hold_at_its_handshakes(
        make_server: ServerFactory) -> None:
    """Its allow-list at its path and at its host name, polling and websocket, refused as
    ``socketio.origins`` refuses (403, Engine.IO's "Forbidden"); a page's Referer stands in
    for a missing Origin; the default app's handshakes are not its business."""
    server = await make_server({"apps": [{
        **TENANT, "allowedOrigins": ["https://tenant.example"]}]}, redis=False)
    forbidden = (403, {"code": 4, "message": "Forbidden"})
    tenant_host = {"Host": "tenant.test"}
    for path, headers in ((PATH + "/", {}), ("/socket.io/", tenant_host)):
        assert await _handshake(server, path, {**headers, "Origin": "https://evil.example"}) \
            == forbidden
        assert await _handshake(server, path, headers) == forbidden  # as its Pusher clients
        assert (await _handshake(server, path, {
            **headers, "Origin": "https://tenant.example"}))[0] == 200
        assert (await _handshake(server, path, {
            **headers, "Referer": "https://tenant.example/orders?page=2"}))[0] == 200
        refused = await RawWebSocket.connect(server, "EIO=4&transport=websocket", path=path,
                                             headers={**headers,
                                                      "Origin": "https://evil.example"})
        assert (refused.status, json.loads(refused.body)) == forbidden
        await socketio_client(server, path=path,
                              headers={**headers, "Origin": "https://tenant.example"})
    assert (await _handshake(server, "/socket.io/", {"Origin": "https://evil.example"}))[0] \
        == 200


@requires_node
@pytest.mark.parametrize("stack", STACKS)
async def test_a_page_from_an_origin_its_app_does_not_allow_never_connects(
        make_server: ServerFactory, node_client: ClientFactory, stack: str) -> None:
    """laravel-echo sending its page's Origin: the app's own origin connects, another one
    gets a ``connect_error`` and never connects, and at the default app's path it does."""
    server = await make_server({"apps": [{
        **TENANT, "allowedOrigins": ["https://tenant.example"]}]}, redis=False)
    allowed = await node_client(stack, server_url(server), echo_options={"path": PATH},
                                extra_headers={"Origin": "https://tenant.example"})
    await allowed.expect("connected")
    evil = await node_client(stack, server_url(server), echo_options={"path": PATH},
                             extra_headers={"Origin": "https://evil.example"},
                             reconnection=False)
    await evil.expect("connect_error")
    await evil.expect_none("connected", within=0.3)
    default = await node_client(stack, server_url(server),
                                extra_headers={"Origin": "https://evil.example"})
    await default.expect("connected")


# --------------------------------------------------------------------------- channels, whispers


@requires_node
@pytest.mark.parametrize("stack", STACKS)
async def test_channel_and_client_event_bounds_of_an_isolated_apps_pages(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        stack: str) -> None:
    """maxChannelsPerConnection 2: the third channel goes to Echo's error callback with
    4300. maxClientEventsPerSecond 1: of two whispers in a second, one arrives, the other is
    dropped and counted; an app with enableClientMessages false relays none, each counted.
    The default app's pages subscribe and whisper as before."""
    auth_backend.allow_private("private-chat")
    bounded = {"appId": "5002", "key": "bounded-key", "secret": "bounded-secret",
               "socketioPath": PATH, "authHost": auth_backend.url,
               "maxChannelsPerConnection": 2, "maxClientEventsPerSecond": 1}
    quiet = {"appId": "5003", "key": "quiet-key", "secret": "quiet-secret",
             "socketioPath": "/quiet/socket.io", "authHost": auth_backend.url,
             "enableClientMessages": False}
    server = await make_server({"apps": [bounded, quiet], "authHost": auth_backend.url},
                               redis=False)
    errors = server.errors.counts

    async def pair(path: str | None, tag: str) -> tuple[Any, Any]:
        options = {"echo_options": {"path": path}} if path else {}
        pages = [await node_client(stack, server_url(server), **options) for _ in range(2)]
        for page in pages:
            await page.expect("connected")
            await page.command({"cmd": "private", "channel": "chat",
                                "whisper_listen": ["typing"]})
        await wait_until(lambda: server.core.rooms.count("private-chat" + tag) == 2,
                         "both in the chat")
        return pages[0], pages[1]

    sender, listener = await pair(PATH, "\x1f5002")
    for channel in ("orders", "invoices"):
        await sender.command({"cmd": "channel", "channel": channel})
    refused = await sender.expect("subscription_error")
    assert (refused["channel"], refused["status"]) == ("invoices", 4300)
    assert errors["too_many_channels"] == 1
    for n in (1, 2):
        await sender.command({"cmd": "whisper", "channel": "chat", "event": "typing",
                              "data": {"n": n}})
    assert (await listener.expect("whisper"))["data"] == {"n": 1}
    await listener.expect_none("whisper", within=0.3)
    await wait_until(lambda: errors["rate_limited"] == 1, "the second one counted")

    sender, listener = await pair("/quiet/socket.io", "\x1f5003")
    await sender.command({"cmd": "whisper", "channel": "chat", "event": "typing", "data": {}})
    await listener.expect_none("whisper", within=0.3)
    await wait_until(lambda: errors["client_events_off"] == 1, "counted")

    sender, listener = await pair(None, "")  # the default app's: no bound of theirs
    for channel in ("orders", "invoices", "refunds"):
        await sender.command({"cmd": "channel", "channel": channel})
    await wait_until(lambda: server.core.rooms.count("refunds") == 1, "all three joined")
    for n in (1, 2):
        await sender.command({"cmd": "whisper", "channel": "chat", "event": "typing",
                              "data": {"n": n}})
    assert [(await listener.expect("whisper"))["data"]["n"] for _ in range(2)] == [1, 2]
    await sender.expect_none("subscription_error", within=0.0)
    assert (errors["too_many_channels"], errors["rate_limited"],
            errors["client_events_off"]) == (1, 1, 1)
