"""Input that kills laravel-echo-server 1.6.3 (protocol sheet §2 and §5, the
items marked BUG) is survived: the offending tab keeps its connection, every
other tab keeps receiving, and no room keeps a socket that is gone.

Also the channel rules around it: private channels without an authorizer,
and which whispers (``client event``) are relayed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from channel_auth import AuthRequest, AuthResult
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, free_port, laravel_message, requires_node, server_url
from tests.support.auth_backend import AuthBackend
from tests.support.node_client import NodeEchoClient
from tests.support.waits import (
    ClientFactory,
    member_ids,
    rooms_holding,
    server_socket,
    wait_gone,
    wait_member,
    wait_not_member,
)

pytestmark = requires_node

PREFIX = "laravel_database_"
CHANNEL = "leads-management"
MARKER = "marker"
STACK = "echo1-sio2"  # what the reference's users run
MEMBER = {"user_id": 7, "user_info": {"name": "Ayşe"}}


class Authorizer:
    """In-process authorizer: per-channel answers, and a gate that holds any
    request whose ``auth.headers`` carry ``X-Block`` until ``release`` is set,
    then gives it ``blocked_answer``.

    ``stubborn`` ignores cancellation, like an HTTP call that completes anyway,
    so the server sees an answer for a socket that is already gone.
    """

    def __init__(self, answers: dict[str, AuthResult] | None = None, *,
                 default: AuthResult | None = None, blocked_answer: AuthResult | None = None,
                 stubborn: bool = False) -> None:
        self.answers = answers or {}
        self.default = default or AuthResult(200, MEMBER)
        self.blocked_answer = blocked_answer or self.default
        self.stubborn = stubborn
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.cancelled = False
        self.requests: list[AuthRequest] = []

    async def authorize(self, request: AuthRequest) -> AuthResult:
        self.requests.append(request)
        if "X-Block" not in request.headers:
            return self.answers.get(request.channel, self.default)
        self.started.set()
        try:
            while True:
                try:
                    await self.release.wait()
                    break
                except asyncio.CancelledError:
                    self.cancelled = True
                    if not self.stubborn:
                        raise
            return self.blocked_answer
        finally:
            self.finished.set()


async def _server(make_server: ServerFactory, options: dict[str, Any] | None = None,
                  **kwargs: Any) -> EchoServer:
    return await make_server({"databaseConfig": {"redis": {"keyPrefix": PREFIX}},
                              **(options or {})}, **kwargs)


async def _client(server: EchoServer, node_client: ClientFactory, stack: str = STACK,
                  **kwargs: Any) -> tuple[NodeEchoClient, str]:
    client = await node_client(stack, server_url(server), transports="websocket", **kwargs)
    connected = await client.expect("connected")
    return client, connected["socketId"]


async def _publish(redis: aioredis.Redis, channel: str, event: str, data: dict[str, Any],
                   socket_id: str | None = None) -> None:
    await redis.publish(PREFIX + channel, laravel_message(event, data, socket_id))


async def _still_serving(server: EchoServer, redis: aioredis.Redis, good: NodeEchoClient,
                         good_channel: str, bad: NodeEchoClient | None = None,
                         bad_id: str | None = None) -> None:
    """The well-behaved tab receives a Redis event; the bad tab, if still
    connected, can subscribe and receive too, and gets nothing it did not
    subscribe to. The bad tab's subscribe is handled after its bad input (one
    connection is processed in order), so this also proves the input was seen."""
    if bad is not None:
        assert bad_id is not None
        await bad.command({"cmd": "channel", "channel": MARKER, "listen": [".marker"]})
        await wait_member(server, MARKER, bad_id)
    await _publish(redis, good_channel, "lead.assigned", {"ok": 1})
    await _publish(redis, MARKER, "marker", {"ok": 2})
    got = await good.expect("event", event=".lead.assigned")
    assert got["data"] == {"ok": 1, "socket": None}
    if bad is not None:
        await bad.expect("event", event=".marker", data={"ok": 2, "socket": None})
        await bad.expect_none("raw", event="lead.assigned", within=0.05)
        assert not bad.backlog("disconnected"), "the server dropped the bad tab"
    for client in (good, bad):
        if client is not None:
            assert not client.backlog("error"), client.backlog("error")


def _no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A handler exception is caught and logged at ERROR by the transport; none may happen."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# --------------------------------------------------------------------------- malformed payloads

BAD_EMITS = [
    pytest.param("subscribe", [], "bad_subscribe", id="subscribe-no-argument"),
    pytest.param("subscribe", [None], "bad_subscribe", id="subscribe-null"),
    pytest.param("subscribe", [{}], "bad_subscribe", id="subscribe-empty-object"),
    pytest.param("subscribe", [{"channel": ""}], "bad_subscribe", id="subscribe-empty-channel"),
    pytest.param("subscribe", [{"channel": None}], "bad_subscribe", id="subscribe-null-channel"),
    pytest.param("subscribe", [CHANNEL], "bad_subscribe", id="subscribe-string"),
    pytest.param("subscribe", [42], "bad_subscribe", id="subscribe-number"),
    pytest.param("unsubscribe", [], "bad_subscribe", id="unsubscribe-no-argument"),
    pytest.param("unsubscribe", [{}], "bad_subscribe", id="unsubscribe-empty-object"),
    pytest.param("client event", [], "bad_client_event", id="client-event-no-argument"),
    pytest.param("client event", [None], "bad_client_event", id="client-event-null"),
    pytest.param("client event", ["{not json"], "bad_client_event", id="client-event-not-json"),
    pytest.param("client event", [7], "bad_client_event", id="client-event-number"),
    pytest.param("client event", [{}], None, id="client-event-empty-object"),
    pytest.param("client event", ["[1,2]"], "bad_client_event", id="client-event-json-array"),
    pytest.param("client event", [{"channel": ["private-x"], "event": "client-x"}], None,
                 id="client-event-channel-list"),
    # Not in the sheet, but the same family: junk where Echo puts its auth headers.
    pytest.param("subscribe", [{"channel": "private-x", "auth": "junk"}], None,
                 id="subscribe-auth-string"),
    pytest.param("subscribe", [{"channel": "private-x", "auth": {"headers": [1, {}]}}], None,
                 id="subscribe-auth-headers-list"),
    pytest.param("subscribe", [{"channel": "private-x", "auth": {"headers": {"X": {"y": 1}}}}],
                 None, id="subscribe-auth-header-object"),
]


@pytest.mark.parametrize(("event", "args", "counted"), BAD_EMITS)
async def test_malformed_payload_is_ignored(make_server: ServerFactory,
                                            node_client: ClientFactory, redis: aioredis.Redis,
                                            caplog: pytest.LogCaptureFixture, event: str,
                                            args: list[Any], counted: str | None) -> None:
    server = await _server(make_server)
    good, good_id = await _client(server, node_client)
    await good.command({"cmd": "channel", "channel": CHANNEL, "listen": [".lead.assigned"]})
    await wait_member(server, CHANNEL, good_id)
    bad, bad_id = await _client(server, node_client, raw=True)

    await bad.command({"cmd": "socket_emit", "event": event, "args": args})
    await _still_serving(server, redis, good, CHANNEL, bad, bad_id)
    # Ignored means ignored: the string "leads-management" did not subscribe the bad tab.
    assert member_ids(server, CHANNEL) == {good_id}
    assert server_socket(server, bad_id).state.channels == {MARKER}
    if counted is not None:
        assert server.errors.counts[counted] == 1
    _no_server_errors(caplog)


# --------------------------------------------------------------------------- presence leave

async def test_leave_presence_after_403(make_server: ServerFactory, node_client: ClientFactory,
                                        redis: aioredis.Redis,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """Echo.leave() after a refused join unsubscribes from a presence channel
    the socket never joined."""
    authorizer = Authorizer({"presence-room": AuthResult(403)})
    server = await _server(make_server, authorizer=authorizer)
    good, good_id = await _client(server, node_client)
    await good.command({"cmd": "channel", "channel": CHANNEL, "listen": [".lead.assigned"]})
    await wait_member(server, CHANNEL, good_id)
    bad, bad_id = await _client(server, node_client, raw=True)

    await bad.command({"cmd": "join", "channel": "room"})
    await bad.expect("subscription_error", channel="presence-room", status=403)
    await bad.command({"cmd": "leave", "channel": "room"})
    await _still_serving(server, redis, good, CHANNEL, bad, bad_id)
    assert not server.core.rooms.count("presence-room")
    _no_server_errors(caplog)


async def test_unsubscribe_presence_twice(make_server: ServerFactory,
                                          node_client: ClientFactory, redis: aioredis.Redis,
                                          caplog: pytest.LogCaptureFixture) -> None:
    server = await _server(make_server, authorizer=Authorizer())
    good, good_id = await _client(server, node_client)
    await good.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"]})
    await wait_member(server, "presence-room", good_id)
    bad, bad_id = await _client(server, node_client, raw=True)
    await bad.command({"cmd": "join", "channel": "room"})
    await wait_member(server, "presence-room", bad_id)

    for _ in range(2):
        await bad.command({"cmd": "socket_emit", "event": "unsubscribe",
                           "args": [{"channel": "presence-room"}]})
    await wait_not_member(server, "presence-room", bad_id)
    await _still_serving(server, redis, good, "presence-room", bad, bad_id)
    assert member_ids(server, "presence-room") == {good_id}
    _no_server_errors(caplog)


# --------------------------------------------------------------------------- disconnects

@pytest.mark.parametrize(("channel", "answer", "stubborn"), [
    pytest.param("presence-room", AuthResult(200, MEMBER), False, id="presence-allowed"),
    pytest.param("presence-room", AuthResult(200, MEMBER), True, id="presence-allowed-late"),
    pytest.param("presence-room", AuthResult(403), True, id="presence-denied-late"),
    pytest.param("private-room", AuthResult(200), False, id="private-allowed"),
    pytest.param("private-room", AuthResult(403), True, id="private-denied-late"),
])
async def test_disconnect_during_pending_auth(make_server: ServerFactory,
                                              node_client: ClientFactory,
                                              redis: aioredis.Redis,
                                              caplog: pytest.LogCaptureFixture, channel: str,
                                              answer: AuthResult, stubborn: bool) -> None:
    """A tab closed while its auth request is in flight (§2 BUG): the late
    answer, if any, reaches nobody and joins nothing."""
    authorizer = Authorizer(blocked_answer=answer, stubborn=stubborn)
    server = await _server(make_server, authorizer=authorizer)
    good, good_id = await _client(server, node_client, raw=True)
    await good.command({"cmd": "join" if channel.startswith("presence-") else "private",
                        "channel": "room", "listen": [".lead.assigned"]})
    await wait_member(server, channel, good_id)

    bad, bad_id = await _client(server, node_client, auth_headers={"X-Block": "1"})
    dead = server_socket(server, bad_id)
    await bad.command({"cmd": "join" if channel.startswith("presence-") else "private",
                       "channel": "room"})
    await asyncio.wait_for(authorizer.started.wait(), 5)
    await bad.command({"cmd": "disconnect"})
    await wait_gone(server, bad_id)

    authorizer.release.set()
    await asyncio.wait_for(authorizer.finished.wait(), 5)
    assert authorizer.cancelled, "the pending authorization was not cancelled on disconnect"
    assert rooms_holding(server, dead) == []
    assert dead.state.channels == set()
    assert member_ids(server, channel) == {good_id}

    await _still_serving(server, redis, good, channel)
    # Whatever the late answer was, nobody was told about the dead socket.
    for event in ("subscription_error", "presence:joining", "presence:leaving"):
        await good.expect_none("raw", event=event, within=0.01)
    assert not bad.backlog("subscription_error")
    _no_server_errors(caplog)


async def test_disconnect_from_presence_without_channel_data(
        make_server: ServerFactory, node_client: ClientFactory, redis: aioredis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    """The backend answered 200 without ``channel_data``: the socket joins
    the room without being a presence member, then disconnects (§4 BUG)."""
    authorizer = Authorizer(default=AuthResult(200, MEMBER))
    server = await _server(make_server, authorizer=authorizer)
    good, good_id = await _client(server, node_client, raw=True)
    await good.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"]})
    await wait_member(server, "presence-room", good_id)

    authorizer.default = AuthResult(200)
    bad, bad_id = await _client(server, node_client)
    dead = server_socket(server, bad_id)
    await bad.command({"cmd": "join", "channel": "room", "listen": [".lead.assigned"]})
    await wait_member(server, "presence-room", bad_id)
    await _publish(redis, "presence-room", "lead.assigned", {"both": 1})
    for client in (good, bad):
        await client.expect("event", data={"both": 1, "socket": None})

    await bad.command({"cmd": "disconnect"})
    await wait_gone(server, bad_id)
    assert rooms_holding(server, dead) == []
    await _still_serving(server, redis, good, "presence-room")
    await good.expect_none("raw", event="presence:leaving", within=0.01)
    _no_server_errors(caplog)


# --------------------------------------------------------------------------- private channels

@pytest.mark.parametrize("backend", ["refusing", "unreachable"])
async def test_private_channels_refused(make_server: ServerFactory, node_client: ClientFactory,
                                        redis: aioredis.Redis, auth_backend: AuthBackend,
                                        backend: str) -> None:
    """A backend answering 403 (Laravel's refusal) gives 403; an auth host that cannot
    be reached gives 0. Either way the socket never joins. The name rule is
    unanchored, so ``orders.private-notes`` is private too."""
    status = 403 if backend == "refusing" else 0
    host = auth_backend.url if backend == "refusing" else f"http://127.0.0.1:{free_port()}"
    server = await _server(make_server, {"authHost": host})
    client, socket_id = await _client(server, node_client, raw=True)
    await client.command({"cmd": "private", "channel": "orders", "listen": [".lead.assigned"]})
    await client.command({"cmd": "join", "channel": "room"})
    await client.command({"cmd": "channel", "channel": "orders.private-notes",
                          "listen": [".lead.assigned"]})
    for channel in ("private-orders", "presence-room", "orders.private-notes"):
        await client.expect("subscription_error", channel=channel, status=status)
        assert not server.core.rooms.count(channel)

    await client.command({"cmd": "channel", "channel": MARKER, "listen": [".marker"]})
    await wait_member(server, MARKER, socket_id)
    for channel in ("private-orders", "orders.private-notes"):
        await _publish(redis, channel, "lead.assigned", {"secret": 1})
    await _publish(redis, MARKER, "marker", {"ok": 1})
    await client.expect("event", event=".marker")
    await client.expect_none("raw", event="lead.assigned", within=0.05)
    assert server_socket(server, socket_id).state.channels == {MARKER}


async def test_per_connection_bounds_on_channels_and_authorizations(
        make_server: ServerFactory, node_client: ClientFactory) -> None:
    """One connection cannot hold more than ``maxChannelsPerSocket`` channels, nor have more
    than ``maxPendingAuthPerSocket`` authorizations in flight (each is a request to the
    app): the one over gets ``subscription_error`` 429, counted; other clients are untouched."""
    authorizer = Authorizer()
    server = await _server(make_server, {"socketio": {"maxChannelsPerSocket": 3,
                                                      "maxPendingAuthPerSocket": 2}},
                           authorizer=authorizer)
    client, socket_id = await _client(server, node_client, raw=True,
                                      auth_headers={"X-Block": "1"})
    for name in ("one", "two", "three"):
        await client.command({"cmd": "private", "channel": name})
    await client.expect("subscription_error", channel="private-three", status=429)
    assert server.errors.counts["rate_limited"] == 1
    assert len(authorizer.requests) == 2

    authorizer.release.set()
    for name in ("private-one", "private-two"):
        await wait_member(server, name, socket_id)
    await client.command({"cmd": "channel", "channel": "public-a"})
    await wait_member(server, "public-a", socket_id)
    await client.command({"cmd": "channel", "channel": "public-a"})  # already in: fine
    await client.command({"cmd": "channel", "channel": "public-b"})
    await client.expect("subscription_error", channel="public-b", status=429)
    assert server.errors.counts["too_many_channels"] == 1
    assert server_socket(server, socket_id).state.channels == {"private-one", "private-two",
                                                                "public-a"}

    other, other_id = await _client(server, node_client)
    await other.command({"cmd": "channel", "channel": "public-b"})
    await wait_member(server, "public-b", other_id)


# --------------------------------------------------------------------------- whispers

@pytest.mark.parametrize("stack", ["echo1-sio2", "echo2-sio4"])
@pytest.mark.parametrize("kind", ["private", "join"])
async def test_whisper_reaches_others_only(make_server: ServerFactory,
                                           node_client: ClientFactory, redis: aioredis.Redis,
                                           stack: str, kind: str) -> None:
    server = await _server(make_server, authorizer=Authorizer())
    channel = ("private-" if kind == "private" else "presence-") + "chat"
    a, a_id = await _client(server, node_client, stack, raw=True)
    b, b_id = await _client(server, node_client, stack)
    for client in (a, b):
        await client.command({"cmd": kind, "channel": "chat", "whisper_listen": ["typing"],
                              "listen": [".marker"]})
    await wait_member(server, channel, a_id)
    await wait_member(server, channel, b_id)

    await a.command({"cmd": "whisper", "channel": "chat", "event": "typing",
                     "data": {"name": "Ayşe"}})
    got = await b.expect("whisper")
    assert got == {"type": "whisper", "channel": channel, "event": "typing",
                   "data": {"name": "Ayşe"}}
    # Never back to the sender: a later broadcast arrives, the whisper never did.
    await _publish(redis, channel, "marker", {"ok": 1})
    await a.expect("event", event=".marker")
    await a.expect_none("raw", event="client-typing", within=0.05)
    await a.expect_none("whisper", within=0.01)


async def test_whisper_rules(make_server: ServerFactory, node_client: ClientFactory) -> None:
    """Relayed only when the name contains ``client-``, the channel is private
    or presence, and the sender has joined it; anything else is dropped."""
    server = await _server(make_server, authorizer=Authorizer())
    a, a_id = await _client(server, node_client)
    b, b_id = await _client(server, node_client, raw=True)
    outsider, outsider_id = await _client(server, node_client)
    for client in (a, b):
        await client.command({"cmd": "private", "channel": "chat"})
        await client.command({"cmd": "channel", "channel": "lobby"})
    for socket_id in (a_id, b_id):
        await wait_member(server, "private-chat", socket_id)
        await wait_member(server, "lobby", socket_id)

    async def emit(client: NodeEchoClient, payload: Any) -> None:
        await client.command({"cmd": "socket_emit", "event": "client event", "args": [payload]})

    # Dropped: no "client-" in the name; a public channel; an unknown channel.
    await emit(a, {"channel": "private-chat", "event": "typing", "data": {"n": 1}})
    await emit(a, {"channel": "lobby", "event": "client-typing", "data": {"n": 2}})
    await emit(a, {"channel": "private-elsewhere", "event": "client-typing", "data": {"n": 3}})
    # Relayed: unanchored "client-", missing data (relayed as null), a JSON string payload.
    await emit(a, {"channel": "private-chat", "event": "xclient-typing", "data": {"n": 4}})
    await emit(a, {"channel": "private-chat", "event": "client-nodata"})
    await emit(a, '{"channel":"private-chat","event":"client-typing","data":{"n":5}}')
    # Dropped: the outsider never joined private-chat. Its later subscribe is
    # handled after this emit, and its later whisper arrives after it.
    await emit(outsider, {"channel": "private-chat", "event": "client-typing", "data": {"n": 6}})
    await outsider.command({"cmd": "private", "channel": "chat"})
    await wait_member(server, "private-chat", outsider_id)
    await outsider.command({"cmd": "whisper", "channel": "chat", "event": "marker",
                            "data": {"n": 7}})

    await b.expect("raw", event="client-marker", args=["private-chat", {"n": 7}])
    relayed = [(m["event"], m["args"]) for m in b.history if m.get("type") == "raw"]
    assert relayed == [
        ("xclient-typing", ["private-chat", {"n": 4}]),
        ("client-nodata", ["private-chat", None]),
        ("client-typing", ["private-chat", {"n": 5}]),
        ("client-marker", ["private-chat", {"n": 7}]),
    ]
    assert not server.core.rooms.count("private-elsewhere")
