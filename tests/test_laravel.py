"""A real Laravel application behind the server: Debian's Laravel 8.83 on PHP 8.2
(tests/laravel_app, served by ``php -S``; tests/support/laravel.py), real Echo clients of
both generations (echo1-sio2, echo2-sio4).

What the app broadcasts arrives exactly as Laravel serialised it; its channel callbacks
decide who gets in, with its status; its presence callback is what ``here``/``joining``/
``leaving`` carry; ``toOthers`` spares the X-Socket-ID tab. And, above all (issue 20), the
app sees every client as itself: the session cookie Laravel sets on one user's
``/broadcasting/auth`` answer never reaches the app with another client's request, with the
auth host reached at a host name, at an IP, and over TLS through nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from broadcaster.phpjson import php_json_encode
from tests.conftest import FAST_SOCKETIO, ServerFactory, free_port, requires_node, server_url
from tests.support import laravel
from tests.support.closing import closing_each
from tests.support.http import http_client
from tests.support.instance import instance_process
from tests.support.laravel import REDIS_PREFIX, TOKENS, USERS, LaravelApp, LaravelPage
from tests.support.node_client import NodeEchoClient
from tests.support.waits import ClientFactory

_why_not = laravel.missing()
pytestmark = [requires_node, pytest.mark.skipif(_why_not is not None, reason=_why_not or "")]

OLD, NEW = "echo1-sio2", "echo2-sio4"
DASHBOARD_1 = "private-admin-dashboard.1"
ONLINE = "presence-online-admins"
API_KEY = {"clients": [{"appId": "test-app", "key": "test-key"}]}
LEAD = {"id": 42, "name": "Zeynep Kaya", "url": "https://crm.example.com/leads/42"}


@pytest.fixture(scope="module")
def app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaravelApp]:
    """One ``php -S`` (four workers) for the whole module."""
    served = LaravelApp(tmp_path_factory.mktemp("laravel"), redis_url, free_port())
    served.start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(autouse=True)
def _no_members_left(redis_url: str) -> None:
    """Presence lives in Redis under Laravel's prefix, the same in every test: start empty."""
    client = sync_redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match="{" + REDIS_PREFIX + "echo}:*"):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
async def pages(app: LaravelApp) -> AsyncIterator[Callable[[int | None], Awaitable[LaravelPage]]]:
    """Browser pages of the app: ``await pages(1)`` logged in as user 1, ``pages(None)`` a
    guest's."""
    async with closing_each() as made:
        async def open_page(user: int | None) -> LaravelPage:
            page = LaravelPage(app)
            made.append(page)
            await page.open()
            return await page.login(user) if user is not None else page

        yield open_page


def _options(auth_host: str) -> dict[str, Any]:
    return {"authHost": auth_host, "authEndpoint": "/broadcasting/auth", "database": "redis",
            "databaseConfig": {"redis": {"keyPrefix": REDIS_PREFIX}}, **API_KEY}


async def _tab(node_client: ClientFactory, url: str, stack: str,
               page: LaravelPage | None = None, **kwargs: Any) -> tuple[NodeEchoClient, str]:
    """An Echo client as ``page`` makes it (its CSRF token, its cookies on the handshake)."""
    client = await node_client(stack, url, transports="websocket",
                               **(page.echo_options() if page else {}), **kwargs)
    connected = await client.expect("connected")
    return client, connected["socketId"]


async def _subscribers(url: str, channel: str, count: int, timeout: float = 5.0) -> None:
    """Until the server's HTTP API counts ``count`` sockets in ``channel`` (a subscribe has no
    answer to await)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with http_client() as http:
        while True:
            async with http.get(f"{url}/apps/test-app/channels/{channel}",
                                params={"auth_key": "test-key"}) as response:
                got = (await response.json())["subscription_count"]
            if got == count:
                return
            assert loop.time() < deadline, f"{channel} has {got} subscribers, not {count}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _published(redis: aioredis.Redis) -> AsyncIterator[list[tuple[str, bytes]]]:
    """Every message Laravel publishes meanwhile, as (channel, the bytes it wrote)."""
    got: list[tuple[str, bytes]] = []
    pubsub = redis.pubsub()
    await pubsub.psubscribe(REDIS_PREFIX + "*")

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                got.append((message["channel"].decode(), message["data"]))

    reader = asyncio.create_task(read())
    try:
        yield got
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()


async def test_every_answer_of_the_app_sets_its_session_cookie(app: LaravelApp,
                                                              pages: Any) -> None:
    """Why a cookie jar in the server is fatal: ``web`` middleware answers /broadcasting/auth
    with ``Set-Cookie: laravel_session`` every time, granted or not."""
    user_1, guest = await pages(1), await pages(None)
    for page, status in ((user_1, 200), (guest, 403)):
        async with http_client() as http, http.post(
                app.url + "/broadcasting/auth",
                data={"channel_name": DASHBOARD_1, "socket_id": "1.1"},
                headers={"Cookie": page.cookie, "X-Requested-With": "XMLHttpRequest"}
        ) as response:
            assert response.status == status
            assert "laravel_session" in response.cookies
    assert [(r["session_user"], r["status"]) for r in app.records()[-2:]] == \
        [(1, 200), (None, 403)]


@pytest.mark.parametrize("reached_at", ["host name", "IP", "TLS via nginx"])
async def test_credentials_never_cross(app: LaravelApp, pages: Any, node_client: ClientFactory,
                                       make_server: ServerFactory, tmp_path: Path, redis_url: str,
                                       request: pytest.FixtureRequest, reached_at: str) -> None:
    """User 1 is let into its dashboard, and the app's answer set user 1's session cookie.
    Then a guest, user 2 (an admin, not this dashboard's), a token client (user 2's
    bearerToken, no cookie) and user 3 (not an admin) ask: the app sees each as itself
    (its own record: the session the page was given, the user of each guard), answers
    each as Laravel does (403 for the refused), and only user 1 gets user 1's notice."""
    async with contextlib.AsyncExitStack() as stack:
        if reached_at == "TLS via nginx":
            ca, cert, key = laravel.throwaway_ca(tmp_path)
            tls_port = free_port()
            nginx = request.getfixturevalue("nginx")  # skips this case alone without nginx
            nginx(laravel.nginx_tls_proxy(tls_port, cert, key, app.port), tls_port)
            # Verification on (the default): the server trusts the throwaway CA through
            # SSL_CERT_FILE, as a deployment trusts its own CA, so it runs as a process.
            (tmp_path / "echo").mkdir()
            _proc, at = await stack.enter_async_context(instance_process(
                tmp_path / "echo", redis_url,
                {**_options(f"https://localhost:{tls_port}"), "socketio": dict(FAST_SOCKETIO)},
                env={"SSL_CERT_FILE": str(ca)}))
            url = server_url(at)  # type: ignore[arg-type]
        else:
            auth_host = app.url if reached_at == "host name" else app.ip_url
            url = server_url(await make_server(_options(auth_host)))

        page_1, guest, page_2, page_3 = await asyncio.gather(
            pages(1), pages(None), pages(2), pages(3))
        user_1, user_1_id = await _tab(node_client, url, NEW, page_1)
        await user_1.command({"cmd": "private", "channel": "admin-dashboard.1",
                              "listen": [".admin.notice"]})
        seen = await app.record_of(user_1_id, DASHBOARD_1)
        assert (seen["session_user"], seen["session"], seen["status"]) == \
            (1, page_1.session, 200)
        await _subscribers(url, DASHBOARD_1, 1)

        (guest_tab, guest_id), (tab_2, tab_2_id), (token, token_id), (tab_3, tab_3_id) = \
            await asyncio.gather(
                _tab(node_client, url, OLD, guest), _tab(node_client, url, NEW, page_2),
                _tab(node_client, url, OLD, auth_token=TOKENS[2]),
                _tab(node_client, url, NEW, page_3))
        for tab in (guest_tab, tab_2):
            await tab.command({"cmd": "private", "channel": "admin-dashboard.1",
                               "listen": [".admin.notice"]})
        for tab in (token, tab_3):
            await tab.command({"cmd": "join", "channel": "online-admins"})

        # Who the app saw, by its own record: (session user, token user, session, status).
        asked = {"guest": (guest_id, DASHBOARD_1), "user 2": (tab_2_id, DASHBOARD_1),
                 "user 2 by token": (token_id, ONLINE), "user 3": (tab_3_id, ONLINE)}
        records = {name: await app.record_of(*where) for name, where in asked.items()}
        seen = {name: (r["session_user"], r["token_user"], r["session"], r["status"])
                for name, r in records.items()}
        token_session = records["user 2 by token"]["session"]  # a fresh one, unknown before
        assert seen == {
            "guest": (None, None, guest.session, 403),
            "user 2": (2, None, page_2.session, 403),
            "user 2 by token": (None, 2, token_session, 200),
            "user 3": (3, None, page_3.session, 403),
        }
        assert not records["user 2 by token"]["had_session_cookie"]
        # Each page's X-CSRF-TOKEN (Echo's csrfToken) arrived with the session it belongs to.
        # (Broadcast::routes() exempts its route from VerifyCsrfToken, so Laravel would not
        # have refused a mismatch: only this record tells.)
        assert [records[name]["csrf_token_matches"] for name in ("guest", "user 2", "user 3")] \
            == [True, True, True]
        assert token_session != page_1.session

        for tab, channel in ((guest_tab, DASHBOARD_1), (tab_2, DASHBOARD_1), (tab_3, ONLINE)):
            await tab.expect("subscription_error", channel=channel, status=403)
        here = await token.expect("presence_here", channel=ONLINE)
        assert here["users"] == [USERS[2]]

        await page_1.dispatch("/admins/1/notice", {"message": "only for Ayşe"})
        got = await user_1.expect("event", event=".admin.notice")
        assert got["data"]["message"] == "only for Ayşe"
        for tab in (guest_tab, tab_2):
            await tab.expect_none("event", within=0.3)
        await _subscribers(url, DASHBOARD_1, 1)


async def test_events_arrive_exactly_as_laravel_serialised(app: LaravelApp, pages: Any,
                                                          node_client: ClientFactory,
                                                          make_server: ServerFactory,
                                                          redis: aioredis.Redis) -> None:
    """The queued LeadAssigned (public and private channel) and the ShouldBroadcastNow
    notice reach Echo listeners of both generations with the very ``data`` Laravel wrote
    to Redis (its JSON: \\u escapes, escaped slashes, its timestamp)."""
    url = server_url(await make_server(_options(app.url)))
    page_1, guest = await asyncio.gather(pages(1), pages(None))
    (admin, admin_id), (visitor, _) = await asyncio.gather(
        _tab(node_client, url, OLD, page_1), _tab(node_client, url, NEW, guest))
    await admin.command({"cmd": "private", "channel": "admin-dashboard.1",
                         "listen": [".lead.assigned", ".admin.notice"]})
    await admin.command({"cmd": "channel", "channel": "leads-management",
                         "listen": [".lead.assigned"]})
    await visitor.command({"cmd": "channel", "channel": "leads-management",
                           "listen": [".lead.assigned"]})
    assert (await app.record_of(admin_id, DASHBOARD_1))["status"] == 200
    await _subscribers(url, DASHBOARD_1, 1)
    await _subscribers(url, "leads-management", 2)

    async with _published(redis) as published:
        await page_1.dispatch("/leads/assign", {"lead": LEAD, "new_admin": 1, "old_admin": 2})
        await page_1.dispatch("/admins/1/notice", {
            "message": "Hoş geldin 🎯 </script>", "meta": {"ratio": 0.1 + 0.2, "tags": []}})
        received = [
            await admin.expect("event", channel="leads-management", event=".lead.assigned"),
            await admin.expect("event", channel=DASHBOARD_1, event=".lead.assigned"),
            await admin.expect("event", channel=DASHBOARD_1, event=".admin.notice"),
            await visitor.expect("event", channel="leads-management", event=".lead.assigned"),
        ]
    # LeadAssigned once per channel (one EVAL), then the notice.
    assert [channel for channel, _ in published] == [
        REDIS_PREFIX + "leads-management", REDIS_PREFIX + DASHBOARD_1, REDIS_PREFIX + DASHBOARD_1]
    lead, lead_again, notice = (json.loads(data) for _, data in published)
    assert lead == lead_again and lead["event"] == "lead.assigned"
    assert [got["data"] for got in received] == [
        lead["data"], lead["data"], notice["data"], lead["data"]]
    assert lead["data"]["assignment"]["type"] == "reassignment"
    assert lead["data"]["notification"]["title"] == "Yeni lead atandı: Zeynep Kaya"
    assert notice == {"event": "admin.notice", "socket": None, "data": {
        "adminId": 1, "message": "Hoş geldin 🎯 </script>",
        "meta": {"ratio": 0.30000000000000004, "tags": []}, "socket": None}}
    assert b"<\\/script>" in published[2][1]  # PHP's json_encode, slashes escaped
    # What our own publisher (broadcaster.phpjson) writes for these is Laravel's very bytes.
    for _, data in published:
        assert php_json_encode(json.loads(data)).encode() == data


async def test_presence_is_what_the_callback_returned(app: LaravelApp, pages: Any,
                                                     node_client: ClientFactory,
                                                     make_server: ServerFactory) -> None:
    """``here``/``joining``/``leaving`` carry the callback's ``{id, name}``; user 1 in two
    tabs is one member (no second joining, no leaving while a tab stays); whispers on the
    presence channel reach the other members' tabs, not the sender's."""
    url = server_url(await make_server(_options(app.url)))
    page_1 = await pages(1)
    tab_a, _ = await _tab(node_client, url, OLD, page_1)
    join = {"cmd": "join", "channel": "online-admins", "whisper_listen": ["typing"]}
    await tab_a.command(join)
    assert (await tab_a.expect("presence_here"))["users"] == [USERS[1]]

    token, _ = await _tab(node_client, url, NEW, auth_token=TOKENS[2])
    await token.command(join)
    here = await token.expect("presence_here")
    assert sorted(here["users"], key=lambda u: u["id"]) == [USERS[1], USERS[2]]
    assert (await tab_a.expect("presence_joining"))["user"] == USERS[2]

    tab_b, _ = await _tab(node_client, url, NEW, page_1)
    await tab_b.command(join)
    here = await tab_b.expect("presence_here")
    assert sorted(here["users"], key=lambda u: u["id"]) == [USERS[1], USERS[2]]

    await tab_a.command({"cmd": "whisper", "channel": "online-admins", "event": "typing",
                         "data": {"who": 1}})
    for tab in (token, tab_b):
        assert (await tab.expect("whisper", event="typing"))["data"] == {"who": 1}
    await tab_a.expect_none("whisper", within=0.2)

    await tab_b.close()
    await token.close()
    assert (await tab_a.expect("presence_leaving"))["user"] == USERS[2]
    # User 1 joined twice and left once: nobody saw user 1 come or go.
    await tab_a.expect_none("presence_joining", within=0.2)
    await tab_a.expect_none("presence_leaving", within=0.2)


async def test_to_others_spares_the_sending_tab(app: LaravelApp, pages: Any,
                                               node_client: ClientFactory,
                                               make_server: ServerFactory) -> None:
    """``broadcast(...)->toOthers()`` with the page's X-Socket-ID, for the queued event and
    the ShouldBroadcastNow one; a whisper on the private channel: the other tab (the other
    client generation) gets each, the sending tab none."""
    url = server_url(await make_server(_options(app.url)))
    page_1 = await pages(1)
    (sender, sender_id), (other, _) = await asyncio.gather(
        _tab(node_client, url, OLD, page_1), _tab(node_client, url, NEW, page_1))
    for tab in (sender, other):
        await tab.command({"cmd": "private", "channel": "admin-dashboard.1",
                           "listen": [".lead.assigned", ".admin.notice"],
                           "whisper_listen": ["typing"]})
        await tab.command({"cmd": "channel", "channel": "leads-management",
                           "listen": [".lead.assigned"]})
    await _subscribers(url, DASHBOARD_1, 2)
    await _subscribers(url, "leads-management", 2)
    assert await sender.socket_id() == sender_id

    await page_1.dispatch("/leads/assign", {"lead": LEAD, "new_admin": 1, "to_others": True},
                          socket_id=sender_id)
    await page_1.dispatch("/admins/1/notice", {"message": "saved", "to_others": True},
                          socket_id=sender_id)
    for channel, event in (("leads-management", ".lead.assigned"),
                           (DASHBOARD_1, ".lead.assigned"), (DASHBOARD_1, ".admin.notice")):
        got = await other.expect("event", channel=channel, event=event)
        assert got["data"]["socket"] == sender_id

    await sender.command({"cmd": "whisper", "channel": "admin-dashboard.1", "event": "typing",
                          "data": {"lead": 42}})
    assert (await other.expect("whisper", event="typing"))["data"] == {"lead": 42}
    await sender.expect_none("event", within=0.3)
    await sender.expect_none("whisper", within=0.1)
