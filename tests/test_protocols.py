"""A third wire protocol plugs in with one line (echo_server/adapters/protocols.py): server-sent
events (tests/support/sse_adapter.py), on a server whose ``server.py`` knows nothing of them,
fed by the core's fan-out with one frame per event like Socket.IO and Pusher, and reached by
a reload as they are."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import aiohttp
import pytest

from echo_server.adapters.protocols import Assembly, Served, Settings
from echo_server.adapters.registry import PROTOCOLS
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, server_url
from tests.support import sse_adapter
from tests.support.http import http_client
from tests.support.waits import wait_until
from tests.test_reload import handshake_status, reload_with

EVENT = {"channel": "leads-management", "name": "lead.assigned", "data": {"lead": {"id": 1}}}


async def test_server_sent_events_are_registered_with_one_line(make_server: ServerFactory
                                                                ) -> None:
    server = await make_server(redis=False, protocols=(*PROTOCOLS, sse_adapter.served))
    base = server_url(server)
    async with http_client() as http:
        streams = [await http.get(f"{base}/sse?channel=leads-management") for _ in range(2)]
        try:
            for stream in streams:
                assert stream.status == 200
                assert stream.headers["Content-Type"] == "text/event-stream"
                assert await asyncio.wait_for(stream.content.readline(), 5) == b": subscribed\n"
                assert await stream.content.readline() == b"\n"
            assert server.core.rooms.count("leads-management") == 2
            assert server.state.connections_by_kind()[("sse", "http")] == 2
            wire = next(iter(server.core.connections.values())).state.wire
            assert isinstance(wire, sse_adapter.SseWire)
            async with http.post(f"{base}/apps/test-app/events?auth_key=test-key",
                                 json=EVENT) as response:
                assert response.status == 200
            for stream in streams:
                lines = [await asyncio.wait_for(stream.content.readline(), 5)
                         for _ in range(3)]
                assert lines[0] == b"event: lead.assigned\n"
                assert lines[1].startswith(b"data: ") and lines[2] == b"\n"
                assert json.loads(lines[1][len(b"data: "):]) == {"lead": {"id": 1}}
            assert wire.frames == 1, "one frame for the event, whatever the recipients"
        finally:
            for stream in streams:
                stream.close()
        await wait_until(lambda: not server.core.connections, "the streams closed in the core")
        assert "leads-management" not in server.core.rooms

        async with http.get(f"{base}/sse?channel=private-leads") as refused:
            assert refused.status == 403  # server to client only: nobody to authorize
        async with http.post(f"{base}/sse?channel=leads-management") as refused:
            assert refused.status == 405


ALLOWED = "https://app.example.com"
NEW_ORIGIN = "https://admin.example.com"


async def sse_status(http: aiohttp.ClientSession, server: EchoServer, origin: str) -> int:
    async with http.get(f"{server_url(server)}/sse?channel=leads-management",
                        headers={"Origin": origin}) as stream:
        return stream.status


def picky(assembly: Assembly) -> Served:
    """A protocol that cannot take any new settings: a reload is refused whole."""

    def reconfigure(settings: Settings) -> Callable[[], None]:
        raise ValueError("picky: these settings will not do")

    return Served("picky", reconfigure=reconfigure)


async def test_a_reload_reaches_every_registered_protocol(make_server: ServerFactory) -> None:
    """`socketio.origins` holds for the event stream as for Socket.IO, and a reload's new
    list reaches both through what each declares (``Served.reconfigure``)."""
    server = await make_server({"socketio": {"origins": "app.example.com:443"}}, redis=False,
                               protocols=(*PROTOCOLS, sse_adapter.served))
    base = server_url(server)
    async with http_client() as http:
        assert await sse_status(http, server, ALLOWED) == 200
        assert await sse_status(http, server, NEW_ORIGIN) == 403
        assert await handshake_status(http, base, NEW_ORIGIN) == 403
        socketio = {**server.config.file_options["socketio"],
                    "origins": f"app.example.com:443 {NEW_ORIGIN}"}
        assert await reload_with(server, socketio=socketio)
        assert await sse_status(http, server, NEW_ORIGIN) == 200
        assert await handshake_status(http, base, NEW_ORIGIN) == 200


async def test_a_reload_one_protocol_refuses_is_applied_by_none(
        make_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    """Every protocol reads the new settings before any applies them: one that cannot take
    them (here the last registered) refuses the reload whole, and the others keep theirs."""
    server = await make_server({"socketio": {"origins": "app.example.com:443"}}, redis=False,
                               protocols=(*PROTOCOLS, sse_adapter.served, picky))
    base = server_url(server)
    socketio = {**server.config.file_options["socketio"],
                "origins": f"app.example.com:443 {NEW_ORIGIN}"}
    async with http_client() as http:
        with caplog.at_level(logging.ERROR, logger="echo_server.reload"):
            assert not await reload_with(server, socketio=socketio)
        assert any("configuration reload refused, the running configuration stays: picky"
                   in record.getMessage() for record in caplog.records)
        assert await handshake_status(http, base, NEW_ORIGIN) == 403
        assert await sse_status(http, server, NEW_ORIGIN) == 403
        assert await handshake_status(http, base, ALLOWED) == 200
