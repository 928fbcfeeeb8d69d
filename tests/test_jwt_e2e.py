"""JWT at the handshake with the real client stacks: how each passes its token,
refusals the client sees, claims feeding channel rules, expiry enforced."""

from __future__ import annotations

import time

import jwt as pyjwt
import pytest

from tests.conftest import requires_node, server_url
from tests.support.auth_backend import AuthBackend
from tests.support.waits import wait_member

pytestmark = requires_node

SECRET = "s" * 48
JWT = {"jwt": {"secret": SECRET, "algorithms": ["HS256"], "audience": "echo"},
       "channels": {"private-admin-dashboard.{id}": {"require": {"sub": "{id}"}}}}


def token(sub: str = "5", ttl: float = 300, **extra: object) -> str:
    claims = {"sub": sub, "aud": "echo", "exp": int(time.time() + ttl), **extra}
    return pyjwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize(("stack", "how"), [
    ("echo1-sio2", "query"), ("echo2-sio2", "query"), ("echo2-sio4", "auth"),
    ("echo2-sio4", "query")])
async def test_token_accepted_and_claims_drive_channel_rules(
        make_server, node_client, auth_backend: AuthBackend, stack: str, how: str) -> None:
    server = await make_server({**JWT, "authHost": auth_backend.url})
    kwargs: dict = {"query": {"token": token()}} if how == "query" else {
        "echo_options": {"auth": {"token": token(), "headers": {}}}}
    client = await node_client(stack, server_url(server), **kwargs)
    connected = await client.expect("connected")
    await client.command({"cmd": "private", "channel": "admin-dashboard.5",
                          "listen": [".lead.assigned"]})
    await wait_member(server, "private-admin-dashboard.5", connected["socketId"])
    await client.command({"cmd": "private", "channel": "admin-dashboard.6",
                          "listen": [".lead.assigned"]})
    await client.expect("subscription_error", channel="private-admin-dashboard.6", status=403)
    assert auth_backend.calls == []  # decided locally from the claims


@pytest.mark.parametrize("stack", ["echo1-sio2", "echo2-sio4"])
@pytest.mark.parametrize("bad", ["missing", "expired", "wrong-audience", "forged"])
async def test_refused_connections_see_the_protocol_error(make_server, node_client, stack: str,
                                                          bad: str) -> None:
    server = await make_server(JWT)
    tokens = {"missing": None, "expired": token(ttl=-60),
              "wrong-audience": pyjwt.encode({"sub": "5", "aud": "other"}, SECRET, "HS256"),
              "forged": pyjwt.encode({"sub": "5", "aud": "echo"}, "x" * 48, "HS256")}
    value = tokens[bad]
    kwargs: dict = {"reconnection": False}
    if value is not None:
        kwargs["query"] = {"token": value}
    client = await node_client(stack, server_url(server), **kwargs)
    if stack == "echo2-sio4":
        refused = await client.expect("connect_error")
    else:
        refused = await client.expect("socket_error")
    assert refused["message"]
    assert value is None or value not in refused["message"]
    assert server.errors.counts["auth_failed"] >= 1
    assert not server.core.connections  # nobody got connected


async def test_expired_token_disconnects_the_socket(make_server, node_client) -> None:
    server = await make_server({**JWT, "jwt": {**JWT["jwt"], "leeway": 0}})
    exp = int(time.time()) + 2
    signed = pyjwt.encode({"sub": "5", "aud": "echo", "exp": exp}, SECRET, "HS256")
    client = await node_client("echo2-sio4", server_url(server), reconnection=False,
                               echo_options={"auth": {"token": signed, "headers": {}}})
    await client.expect("connected")
    assert time.time() < exp
    await client.expect("disconnected", timeout=5)
    assert exp - 0.05 <= time.time() < exp + 1.5
    assert server.errors.counts["token_expired"] == 1


async def test_optional_jwt_admits_anonymous_clients(make_server, node_client) -> None:
    server = await make_server({**JWT, "jwt": {**JWT["jwt"], "required": False}})
    client = await node_client("echo1-sio2", server_url(server))
    await client.expect("connected")
