"""``echo_client`` (clients/python) against a real echo-server and a real ``/broadcasting/auth``:
public events, private channels (granted and refused), presence here/joining/leaving, whispers,
leaving, toOthers, resubscription after the server comes back, and the handshake token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import socketio

from broadcaster import Broadcaster
from broadcaster.event import BroadcastEvent
from broadcaster.events import lead_assigned
from echo_client import EchoClient, format_event
from echo_server.process.server import EchoServer
from tests.conftest import free_port, server_url
from tests.support.auth_backend import AuthBackend, AuthCall
from tests.support.tcp_proxy import TcpProxy
from tests.support.waits import wait_until

SECRET = "a-test-secret-that-is-long-enough-for-hs256!"
AYSE = {"id": 1, "name": "Ayşe Yılmaz", "email": "ayse@example.com",
        "leads_assigned_count": 6, "max_leads_per_day": 10}
MEHMET = {"id": 2, "name": "Mehmet Demir", "email": "mehmet@example.com",
          "leads_assigned_count": 5, "max_leads_per_day": 8}
LEAD = {"id": 101, "name": "Zeynep Kaya", "lead_status": {"id": 1, "name": "Yeni"}}


class Inbox:
    """Collects what callbacks receive; ``get`` awaits the next item (bounded)."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[Any] = asyncio.Queue()

    def __call__(self, *args: Any) -> None:
        self.items.put_nowait(args[0] if len(args) == 1 else args)

    async def get(self, timeout: float = 5.0) -> Any:
        return await asyncio.wait_for(self.items.get(), timeout)

    async def nothing(self, within: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            item = await asyncio.wait_for(self.items.get(), within)
            pytest.fail(f"unexpected {item!r}")


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    made: list[EchoClient] = []

    async def factory(url: str, **options: Any) -> EchoClient:
        options.setdefault("transports", ["websocket"])
        options.setdefault("reconnection_delay", 0.1)
        options.setdefault("reconnection_delay_max", 0.3)
        client = EchoClient(url, **options)
        made.append(client)
        await client.connect()
        return client

    try:
        yield factory
    finally:
        await asyncio.gather(*(c.disconnect() for c in made), return_exceptions=True)


async def publish(channels: str | list[str], event: str, data: dict[str, Any],
                  socket: str | None = None) -> None:
    """As a service would: ``broadcaster`` to the servers embedded in this process."""
    async with Broadcaster("memory://") as broadcaster:
        await broadcaster.publish(channels, event, data, socket=socket)


def subscribed(server: EchoServer, channel: str, count: int) -> Callable[[], bool]:
    return lambda: server.core.rooms.count(channel) == count


def presence_by_header(call: AuthCall) -> dict[str, Any]:
    """The member is whoever the ``X-Admin`` header (sent in ``auth.headers``) names."""
    admin = {1: AYSE, 2: MEHMET}[int(call.headers["X-Admin"])]
    return {"channel_data": {"user_id": admin["id"],
                             "user_info": {"id": admin["id"], "name": admin["name"]}}}


def test_event_names_follow_echo() -> None:
    assert format_event(".lead.assigned", "App.Events") == "lead.assigned"
    assert format_event("LeadAssigned", "App.Events") == "App\\Events\\LeadAssigned"
    assert format_event("Leads.LeadAssigned", None) == "Leads\\LeadAssigned"
    assert format_event("\\App\\Custom", "App.Events") == "App\\Custom"


async def test_public_listen_and_to_others(make_server, clients) -> None:
    server = await make_server(redis=False)
    a = await clients(server_url(server))
    b = await clients(server_url(server))
    got_a, got_b, namespaced = Inbox(), Inbox(), Inbox()
    a.channel("leads-management").listen(".lead.assigned", got_a).listen("LeadAssigned",
                                                                          namespaced)
    b.channel("leads-management").listen(".lead.assigned", got_b)
    await wait_until(subscribed(server, "leads-management", 2), "both subscribed")

    event = lead_assigned(LEAD, MEHMET, AYSE, AYSE)
    await publish(event.channels[0], event.name, event.payload)
    for inbox in (got_a, got_b):
        data = await inbox.get()
        assert data["lead"]["name"] == "Zeynep Kaya"
        assert data["assignment"]["type"] == "reassignment"
        assert data["notification"]["title"] == "Yeni lead atandı: Zeynep Kaya"
    await publish("leads-management", "App\\Events\\LeadAssigned", {"n": 1})
    assert (await namespaced.get())["n"] == 1

    # toOthers: the sender's socket id (X-Socket-ID) is left out.
    assert a.socket_id
    await publish("leads-management", "lead.assigned", {"n": 2}, socket=a.socket_id)
    assert (await got_b.get())["n"] == 2
    await got_a.nothing()

    # stop_listening removes just that listener.
    a.channel("leads-management").stop_listening(".lead.assigned", got_a)
    await publish("leads-management", "lead.assigned", {"n": 3})
    assert (await got_b.get())["n"] == 3
    await got_a.nothing()


async def test_private_channels_granted_and_refused(make_server, auth_backend: AuthBackend,
                                                   clients) -> None:
    auth_backend.allow_private("private-admin-dashboard.2")
    server = await make_server({"authHost": auth_backend.url}, redis=False)
    echo = await clients(server_url(server), auth_headers={"X-CSRF-TOKEN": "csrf-1"},
                         token="opaque-token")
    mine, refused = Inbox(), Inbox()
    echo.private("admin-dashboard.2").listen(".lead.assigned", mine)
    echo.private("admin-dashboard.3").listen(".lead.assigned", Inbox()).error(refused)
    assert await refused.get() == 403
    await wait_until(subscribed(server, "private-admin-dashboard.2", 1), "subscribed")

    calls = {call.channel: call for call in auth_backend.calls}
    call = calls["private-admin-dashboard.2"]
    assert call.form["socket_id"] == echo.socket_id
    assert call.headers["X-CSRF-TOKEN"] == "csrf-1"
    assert call.headers["Authorization"] == "Bearer opaque-token"

    event = lead_assigned(LEAD, MEHMET, None, AYSE)
    await publish(list(event.channels), event.name, event.payload)
    data = await mine.get()
    assert data["assignment"]["new_admin"]["name"] == "Mehmet Demir"
    assert server.core.rooms.count("private-admin-dashboard.3") == 0


async def test_presence_here_joining_leaving_whisper_and_leave(make_server, auth_backend,
                                                               clients) -> None:
    auth_backend.rules["presence-leads-management"] = presence_by_header
    server = await make_server({"authHost": auth_backend.url}, redis=False)
    url = server_url(server)
    ayse = await clients(url, auth_headers={"X-Admin": "1"})
    here_a, joining_a, leaving_a, whispers_a = Inbox(), Inbox(), Inbox(), Inbox()
    room_a = (ayse.join("leads-management").here(here_a).joining(joining_a)
              .leaving(leaving_a).listen_for_whisper("typing", whispers_a))
    assert await here_a.get() == [{"id": 1, "name": "Ayşe Yılmaz"}]

    mehmet = await clients(url, auth_headers={"X-Admin": "2"})
    here_b, whispers_b = Inbox(), Inbox()
    room_b = mehmet.join("leads-management").here(here_b).listen_for_whisper("typing",
                                                                             whispers_b)
    assert await here_b.get() == [{"id": 2, "name": "Mehmet Demir"},
                                  {"id": 1, "name": "Ayşe Yılmaz"}]
    assert await joining_a.get() == {"id": 2, "name": "Mehmet Demir"}
    assert sorted(m["id"] for m in room_a.members) == [1, 2]

    # A whisper reaches the other member, never its sender.
    room_b.whisper("typing", {"lead": 101, "typing": True})
    assert await whispers_a.get() == {"lead": 101, "typing": True}
    await whispers_b.nothing()

    # Leaving: the other side sees it, and the channel's events stop.
    events = Inbox()
    mehmet.channel("leads-management").listen(".lead.assigned", events)
    await wait_until(subscribed(server, "leads-management", 1), "public subscribed")
    mehmet.leave("leads-management")  # the public channel and the presence one, as Echo
    assert await leaving_a.get() == {"id": 2, "name": "Mehmet Demir"}
    assert [m["id"] for m in room_a.members] == [1]
    await wait_until(subscribed(server, "leads-management", 0), "public left")
    assert mehmet.channels == []
    await publish("leads-management", "lead.assigned", {"n": 1})
    await events.nothing()


async def test_resubscribes_after_the_server_comes_back(make_server, auth_backend,
                                                        clients) -> None:
    auth_backend.rules["presence-leads-management"] = presence_by_header
    port = free_port()
    options = {"port": port, "authHost": auth_backend.url}
    server = await make_server(options, redis=False)
    echo = await clients(server_url(server), auth_headers={"X-Admin": "1"})
    events, here = Inbox(), Inbox()
    echo.channel("leads-management").listen(".lead.assigned", events)
    echo.join("leads-management").here(here)
    assert await here.get() == [{"id": 1, "name": "Ayşe Yılmaz"}]
    first_id = echo.socket_id

    await server.stop(timeout=2)
    await wait_until(lambda: not echo.connected, "client saw the server go")
    assert echo.join("leads-management").members == []
    again = await make_server(options, redis=False)
    assert await here.get(timeout=10) == [{"id": 1, "name": "Ayşe Yılmaz"}]
    await wait_until(subscribed(again, "leads-management", 1), "resubscribed")
    assert echo.connections == 2 and echo.socket_id != first_id
    await publish("leads-management", "lead.assigned", {"n": 1})
    assert (await events.get())["n"] == 1


def _token(sub: str, ttl: float) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, SECRET, algorithm="HS256")


async def test_handshake_token_and_its_renewal(make_server, clients) -> None:
    server = await make_server({"jwt": {"algorithms": ["HS256"], "secret": SECRET,
                                        "required": True}}, redis=False)
    url = server_url(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await clients(url, token="not-a-jwt", reconnection=False)

    echo = await clients(url, token=_token("1", ttl=2))
    claims = next(iter(server.core.connections.values())).state.claims
    assert claims["sub"] == "1"
    first_id = echo.socket_id
    echo.channel("leads-management")
    # The server ends the connection when the token expires; the next one uses the new token.
    echo.set_token(_token("1-renewed", ttl=60))
    await wait_until(lambda: echo.connections == 2 and echo.connected, "reconnected", 10)
    assert echo.socket_id != first_id
    subs = {s.state.claims["sub"] for s in server.core.connections.values() if s.connected}
    assert subs == {"1-renewed"}
    await wait_until(subscribed(server, "leads-management", 1), "resubscribed")


async def test_recovers_what_it_missed_while_away(make_server, clients) -> None:
    """With connection-state recovery on, a dropped connection comes back as the same
    session (``recovered``, the same socket id) and the events published meanwhile arrive,
    in order; Echo's callbacks never see the offset."""
    server = await make_server({"socketio": {"connectionStateRecovery": {}}}, redis=False)
    proxy = TcpProxy(server.port)
    await proxy.start()
    try:
        echo = await clients(proxy.url)
        events = Inbox()
        echo.channel("leads-management").listen(".lead.assigned", events)
        await wait_until(subscribed(server, "leads-management", 1), "subscribed")
        server.publish(BroadcastEvent("leads-management", "lead.assigned", '{"n":0}'))
        assert await events.get() == {"n": 0}
        first_id = echo.socket_id

        proxy.cut()
        sessions = server.core.sessions
        assert sessions is not None
        await wait_until(lambda: bool(sessions.parked), "the drop noticed")
        for n in (1, 2):
            server.publish(BroadcastEvent("leads-management", "lead.assigned",
                                          f'{{"n":{n}}}'))
        proxy.release()
        assert [await events.get(timeout=10), await events.get()] == [{"n": 1}, {"n": 2}]
        assert echo.recovered and echo.socket_id == first_id
        await events.nothing()
    finally:
        await proxy.stop()
