"""A third wire protocol plugs in with one line (echo_server/adapters/protocols.py): server-sent
events (tests/support/sse_adapter.py), on a server whose ``server.py`` knows nothing of them,
fed by the core's fan-out with one frame per event like Socket.IO and Pusher."""

from __future__ import annotations

import asyncio
import json

from echo_server.adapters.registry import PROTOCOLS
from tests.conftest import ServerFactory, server_url
from tests.support import sse_adapter
from tests.support.http import http_client
from tests.support.waits import wait_until

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
