"""Webhooks as the Laravel app receives them: Pusher's format, signed with the app's secret
(what pusher-php-server's ``webhook()`` verifies), batched, retried until the endpoint takes
them, in order, and told once per fact when several instances share Redis."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from echo_server.core.presence import key_tag
from echo_server.process.server import EchoServer
from tests.conftest import (
    ServerFactory,
    requires_node,
    server_url,
)
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.instance import instance_process
from tests.support.raw import RawWebSocket
from tests.support.waits import ClientFactory, wait_until
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "app-secret"
FAST = {"batchMs": 50, "retryBaseMs": 50, "retryMaxMs": 200, "pollMs": 20}


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver()
    await running.start()
    yield running
    await running.stop()


def _app(receiver: WebhookReceiver, grace_ms: int = 100, **hook: Any) -> dict[str, Any]:
    return {"clients": [{"appId": "lead-panel", "key": "app-key", "secret": SECRET,
                         "webhooks": [{"url": receiver.url, **hook}]}],
            "webhooks": FAST, "socketio": {"presenceGraceMs": grace_ms}}


async def _subscriber(server: EchoServer, *channels: str) -> RawWebSocket:
    ws = await RawWebSocket.connect(server, "EIO=4&transport=websocket")
    assert (await ws.recv_text()).startswith("0")
    ws.send_text("40")
    assert (await ws.recv_text()).startswith("40")
    for channel in channels:
        ws.send_text(f'42["subscribe",{{"channel":{json.dumps(channel)}}}]')
    return ws


def _as_member(call: AuthCall) -> dict[str, Any]:
    user_id = json.loads({k.lower(): v for k, v in call.headers.items()}["x-user-id"])
    return {"channel_data": {"user_id": user_id, "user_info": {"name": f"admin {user_id}"}}}


def _names(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(e["name"], e["channel"], *([e["user_id"]] if "user_id" in e else []))
            for e in events]


@requires_node
async def test_each_kind_arrives_signed_in_pushers_format(
        make_server: ServerFactory, node_client: ClientFactory, auth_backend: AuthBackend,
        receiver: WebhookReceiver) -> None:
    auth_backend.rules["presence-admins"] = _as_member
    server = await make_server({"authHost": auth_backend.url, **_app(receiver)}, redis=False)
    pages = []
    for user in (1, 2):
        page = await node_client("echo2-sio4", server_url(server), transports="websocket",
                                 auth_headers={"X-User-Id": json.dumps(user)})
        await page.expect("connected")
        await page.command({"cmd": "join", "channel": "admins",
                            "whisper_listen": ["typing"]})
        await page.expect("presence_here")
        pages.append(page)
    await pages[0].command({"cmd": "whisper", "channel": "presence-admins", "event": "typing",
                            "data": {"lead": 101}})
    await pages[1].expect("whisper")
    await pages[1].close()
    await pages[0].close()
    events = await receiver.wait_events(6)
    assert _names(events) == [
        ("channel_occupied", "presence-admins"), ("member_added", "presence-admins", "1"),
        ("member_added", "presence-admins", "2"),
        ("client_event", "presence-admins", "1"),
        ("member_removed", "presence-admins", "2"), ("member_removed", "presence-admins", "1"),
        ("channel_vacated", "presence-admins")]
    whisper = events[3]
    assert whisper["event"] == "client-typing"
    assert json.loads(whisper["data"]) == {"lead": 101}  # a string, as Pusher sends it
    assert whisper["socket_id"]
    for delivery in receiver.deliveries:
        assert delivery.signed_with(SECRET)
        assert delivery.headers["X-Pusher-Key"] == "app-key"
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["X-Webhook-Id"]
        assert isinstance(json.loads(delivery.body)["time_ms"], int)
        # The receiver set a cookie on each answer; the sender never sends one back.
        assert "Cookie" not in delivery.headers


async def test_filters_pick_event_types_and_channels(make_server: ServerFactory,
                                                     receiver: WebhookReceiver) -> None:
    server = await make_server(_app(receiver, event_types=["channel_vacated"],
                                    filter={"channel_name_starts_with": "leads-"}), redis=False)
    ws = await _subscriber(server, "leads-management", "admin-capacity")
    await wait_until(lambda: server.core.rooms.count("admin-capacity") == 1, "subscribed")
    await ws.close()
    assert _names(await receiver.wait_events(1)) == [("channel_vacated", "leads-management")]
    await wait_until(lambda: not server.core.rooms.count("admin-capacity"), "left")
    assert len(receiver.events()) == 1


async def test_a_receiver_down_then_failing_gets_everything_once_in_order(
        make_server: ServerFactory, receiver: WebhookReceiver) -> None:
    server = await make_server(_app(receiver, event_types=["channel_occupied"]), redis=False)
    await receiver.down()
    sockets = [await _subscriber(server, f"c{n}") for n in range(3)]
    await wait_until(lambda: server.webhooks.stats.failed >= 2, "refused twice")
    assert server.webhooks.figures()["queued"] >= 1  # waiting, as /metrics shows
    receiver.status = 500
    await receiver.up()
    await wait_until(lambda: len(receiver.deliveries) >= 2, "failing deliveries")
    receiver.status = 200
    events = await receiver.wait_events(3)
    assert _names(events) == [("channel_occupied", f"c{n}") for n in range(3)]
    failed = [d for d in receiver.deliveries if d.status == 500]
    taken = receiver.taken()
    # A redelivery is the same batch: same id, same bytes (so the same signature).
    assert {d.headers["X-Webhook-Id"] for d in failed} <= {d.headers["X-Webhook-Id"]
                                                          for d in taken}
    assert all(d.body == next(t.body for t in taken
                              if t.headers["X-Webhook-Id"] == d.headers["X-Webhook-Id"])
               for d in failed)
    assert server.metrics is not None
    scrape = server.metrics.render()
    assert b"echo_webhooks_retried_total" in scrape
    assert b"echo_webhooks_queued 0.0" in scrape
    for ws in sockets:
        await ws.close()


async def test_two_instances_tell_each_fact_once(make_server: ServerFactory,
                                                 receiver: WebhookReceiver) -> None:
    options = {"database": "redis", **_app(receiver, event_types=["channel_occupied",
                                                                  "channel_vacated"]),
               "cluster": {"heartbeatInterval": 200, "livenessTtl": 1000}}
    servers = [await make_server(options), await make_server(options)]
    first = await _subscriber(servers[0], "leads-management")
    await receiver.wait_events(1)
    second = await _subscriber(servers[1], "leads-management")
    await wait_until(lambda: servers[1].core.rooms.count("leads-management") == 1, "joined")
    await first.close()
    await wait_until(lambda: not servers[0].core.rooms.count("leads-management"), "left")
    await second.close()
    events = await receiver.wait_events(2)
    assert _names(events) == [("channel_occupied", "leads-management"),
                              ("channel_vacated", "leads-management")]


async def test_batches_queued_by_a_stopped_instance_are_delivered_by_another(
        make_server: ServerFactory, receiver: WebhookReceiver) -> None:
    options = {"database": "redis", **_app(receiver, event_types=["channel_occupied"]),
               "cluster": {"heartbeatInterval": 200, "livenessTtl": 1000}}
    survivor = await make_server(options)
    leaving = await make_server(options)
    await receiver.down()
    sockets = [await _subscriber(leaving, f"c{n}") for n in range(3)]
    await wait_until(lambda: leaving.webhooks.stats.failed + survivor.webhooks.stats.failed,
                     "queued and refused")
    await leaving.stop()
    await receiver.up()
    events = await receiver.wait_events(3, timeout=15)
    assert _names(events)[:3] == [("channel_occupied", f"c{n}") for n in range(3)]
    assert survivor.webhooks.stats.sent >= 1
    for ws in sockets:
        await ws.close()


# --------------------------------------------------------------------------- kill -9
def _shared(receiver: WebhookReceiver, prefix: str, event_types: list[str]) -> dict[str, Any]:
    return {"database": "redis", "databaseConfig": {"redis": {"keyPrefix": prefix}},
            "cluster": {"heartbeatInterval": 100, "livenessTtl": 400},
            **_app(receiver, event_types=event_types),
            "webhooks": {**FAST, "timeoutMs": 500}}


@pytest.fixture
def prefix() -> str:
    return f"app{secrets.token_hex(3)}_database_"


async def test_a_killed_instances_channels_and_members_are_told_once(
        tmp_path: Path, make_server: ServerFactory, redis_url: str, auth_backend: AuthBackend,
        receiver: WebhookReceiver, prefix: str) -> None:
    auth_backend.rules["presence-admins"] = _as_member
    # Only the killed instance's members may be told gone. The raw sockets here answer no
    # pings: at the suite's 0.4 s ping the watcher was dropped whenever a busy machine
    # stretched the test past 0.8 s. And at a liveness of 0.4 s, the doomed instance took
    # the survivor (this test's loop, stalled) for dead before it was killed itself.
    shared = _shared(receiver, prefix, ["channel_vacated", "member_removed"])
    options = {**shared, "authHost": auth_backend.url,
               "socketio": {"pingInterval": 60_000, "pingTimeout": 60_000},
               "cluster": {"heartbeatInterval": 100, "livenessTtl": 1500}}
    survivor = await make_server(options)
    async with instance_process(tmp_path, redis_url, options) as (proc, doomed):
        watcher = await _subscriber(survivor)
        watcher.send_text('42["subscribe",{"channel":"presence-admins","auth":{"headers":'
                          '{"X-User-Id":"1"}}}]')
        victim = await _subscriber(doomed, "leads-management")  # held by the doomed one only
        victim.send_text('42["subscribe",{"channel":"presence-admins","auth":{"headers":'
                         '{"X-User-Id":"2"}}}]')
        store = survivor.core.presence.store
        await wait_until_async(lambda: _member_ids(store), {1, 2})
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        events = await receiver.wait_events(2)
    assert sorted(_names(events)) == [("channel_vacated", "leads-management"),
                                      ("member_removed", "presence-admins", "2")]
    # Told once: nothing more comes within a few batch windows and sender polls.
    await asyncio.sleep(0.3)
    assert _names(receiver.events()) == _names(events)


async def test_batches_queued_by_a_killed_instance_are_delivered_by_another(
        tmp_path: Path, make_server: ServerFactory, redis_url: str, redis: aioredis.Redis,
        receiver: WebhookReceiver, prefix: str) -> None:
    options = _shared(receiver, prefix, ["channel_occupied"])
    await receiver.down()
    survivor = await make_server(options)
    async with instance_process(tmp_path, redis_url, options) as (proc, doomed):
        sockets = [await _subscriber(doomed, f"c{n}") for n in range(3)]
        endpoint = survivor.config.webhook_endpoints[0]
        key = f"{key_tag(prefix)}:webhooks:{endpoint.ident}"

        async def queued() -> int:
            waiting = await redis.llen(f"{key}:events")
            return int(waiting) + int(await redis.hget(f"{key}:batch", "count") or 0)

        await wait_until_async(queued, 3)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        for ws in sockets:
            ws.writer.transport.abort()
    await receiver.up()
    events = await receiver.wait_events(3, timeout=15)
    assert _names(events) == [("channel_occupied", f"c{n}") for n in range(3)]
    assert survivor.webhooks.stats.sent >= 1


async def _member_ids(store: Any) -> set[Any]:
    return {m.user_id for m in await store.members("presence-admins")}


async def wait_until_async(read: Any, want: Any, timeout: float = 10.0) -> None:
    """Until ``await read()`` is ``want``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await read()) != want:
        assert loop.time() < deadline, f"still {got!r}, waiting for {want!r}"
        await asyncio.sleep(0.02)


async def test_a_reload_within_the_grace_tells_neither_leaving_nor_joining(
        make_server: ServerFactory, auth_backend: AuthBackend, receiver: WebhookReceiver) -> None:
    """The old page's socket closes (a close frame ends membership at once), the new page
    joins: the app is not told the admin went offline and came back; a page that does not
    come back is told gone once the grace is over."""
    auth_backend.rules["presence-admins"] = _as_member
    server = await make_server({
        "authHost": auth_backend.url,
        **_app(receiver, grace_ms=300, event_types=["member_added", "member_removed"])},
        redis=False)
    join = '42["subscribe",{"channel":"presence-admins","auth":{"headers":{"X-User-Id":"1"}}}]'
    store = server.core.presence.store
    page = await _subscriber(server)
    page.send_text(join)
    assert _names(await receiver.wait_events(1)) == [("member_added", "presence-admins", "1")]
    await page.close()
    await wait_until_async(lambda: _member_ids(store), set())
    reloaded = await _subscriber(server)
    reloaded.send_text(join)
    await wait_until_async(lambda: _member_ids(store), {1})
    await reloaded.close()
    events = await receiver.wait_events(2)
    assert _names(events) == [("member_added", "presence-admins", "1"),
                              ("member_removed", "presence-admins", "1")]


async def test_a_reload_moves_the_webhooks_to_a_new_endpoint_and_secret(
        make_server: ServerFactory, receiver: WebhookReceiver) -> None:
    moved = WebhookReceiver()
    await moved.start()
    try:
        server = await make_server(_app(receiver, event_types=["channel_occupied"]),
                                   redis=False)
        first = await _subscriber(server, "before")
        assert _names(await receiver.wait_events(1)) == [("channel_occupied", "before")]
        path = Path(server.config.config_file)
        options = json.loads(path.read_text())
        options["clients"][0].update(secret="rotated-secret", webhooks=[
            {"url": moved.url, "event_types": ["channel_occupied"]}])
        path.write_text(json.dumps(options))
        assert await server.reloader.reload()
        second = await _subscriber(server, "after")
        assert _names(await moved.wait_events(1)) == [("channel_occupied", "after")]
        assert moved.deliveries[0].signed_with("rotated-secret")
        assert len(receiver.events()) == 1  # the old endpoint hears nothing more
        for ws in (first, second):
            await ws.close()
    finally:
        await moved.stop()


async def test_a_cache_channel_without_a_last_event_tells_cache_miss(
        make_server: ServerFactory, receiver: WebhookReceiver) -> None:
    server = await make_server(_app(receiver, event_types=["cache_miss"]), redis=False)
    ws = await _subscriber(server, "cache-capacity")
    assert _names(await receiver.wait_events(1)) == [("cache_miss", "cache-capacity")]
    await ws.close()
