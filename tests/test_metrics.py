"""`/metrics` after real traffic: the counts match what the test drove, exactly."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import redis.asyncio as aioredis

from echo_server.transport.engine import EngineServer
from tests.conftest import laravel_message, server_url
from tests.support.http import http_client
from tests.support.waits import wait_until

PREFIX = "laravel_database_"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


async def _scrape(http: aiohttp.ClientSession, base: str, **kwargs: object) -> str:
    async with http.get(f"{base}/metrics", **kwargs) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


async def test_counts_after_traffic(make_server, redis: aioredis.Redis, auth_backend) -> None:
    auth_backend.allow_private("private-ok")
    server = await make_server({"databaseConfig": {"redis": {"keyPrefix": PREFIX}},
                                "authHost": auth_backend.url})
    base = server_url(server)
    clients, events = 4, 5
    async with http_client() as http:
        sockets = []
        for i in range(clients):
            eio = 3 if i % 2 == 0 else 4
            ws = await http.ws_connect(
                base.replace("http", "ws") + f"/socket.io/?EIO={eio}&transport=websocket",
                autoping=False)
            await ws.receive_str()
            if eio == 4:
                await ws.send_str("40")
            assert (await ws.receive_str()).startswith("40")
            await ws.send_str('42["subscribe",{"channel":"leads-management"}]')
            sockets.append(ws)
        await sockets[0].send_str('42["subscribe",{"channel":"private-ok"}]')
        await sockets[0].send_str('42["subscribe",{"channel":"private-no"}]')
        await sockets[1].send_str("42garbage")  # a bad frame: closes that one connection
        await wait_until(lambda: server.core.rooms.count("leads-management") == clients - 1
                         and server.core.rooms.count("private-ok") == 1, "subscriptions landed")

        for n in range(events):
            await redis.publish(PREFIX + "leads-management",
                                laravel_message("lead.assigned", {"n": n}))
        await redis.publish(PREFIX + "leads-management", "not json")
        for ws in (sockets[0], sockets[2], sockets[3]):
            got = 0
            while got < events:
                text = await asyncio.wait_for(ws.receive_str(), 5)
                if text.startswith('42["lead.assigned"'):
                    got += 1
        await wait_until(lambda: server.errors.counts.get("bad_json", 0) == 1,
                         "the bad message was counted")

        text = await _scrape(http, base)
        assert sample(text, "echo_connections", protocol="eio3", transport="websocket") == 2
        assert sample(text, "echo_connections", protocol="eio4", transport="websocket") == 1
        assert sample(text, "echo_channels") == 2
        assert sample(text, "echo_subscriptions") == clients - 1 + 1
        assert sample(text, "echo_events_received_total", source="redis") == events
        assert sample(text, "echo_messages_delivered_total") == events * (clients - 1)
        assert sample(text, "echo_errors_total", kind="bad_json") == 1
        assert sample(text, "echo_errors_total", kind="bad_frame") == 1
        assert sample(text, "echo_auth_requests_total", result="allowed") == 1
        assert sample(text, "echo_auth_requests_total", result="denied") == 1
        assert sample(text, "echo_disconnections_total", reason="parse error") == 1
        assert sample(text, "echo_connect_seconds_count") == clients
        assert sample(text, "echo_broadcast_seconds_count") >= 1
        assert sample(text, "echo_auth_seconds_count") == 2
        assert sample(text, "echo_source_up", source="redis") == 1
        assert sample(text, "process_resident_memory_bytes") > 1_000_000
        for ws in sockets:
            await ws.close()


async def test_reconnection_is_recognised_by_the_io_cookie(make_server) -> None:
    server = await make_server(redis=False)
    base = server_url(server)
    async with http_client() as http:
        async with http.get(f"{base}/socket.io/?EIO=3&transport=polling") as response:
            sid = json.loads((await response.text()).split(":", 1)[1].split("2:40")[0][1:])["sid"]
        server.part(EngineServer).sessions[sid].close("transport close")
        headers = {"Cookie": f"io={sid}"}
        async with http.get(f"{base}/socket.io/?EIO=3&transport=polling",
                            headers=headers) as response:
            assert response.status == 200
        text = await _scrape(http, base)
        assert sample(text, "echo_reconnections_total") == 1
        assert sample(text, "echo_disconnections_total", reason="transport close") == 1


async def test_token_protects_metrics(make_server) -> None:
    server = await make_server({"metrics": {"token": "s3cret"}}, redis=False)
    base = server_url(server)
    async with http_client() as http:
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 403
        await _scrape(http, base, headers={"Authorization": "Bearer s3cret"})
        await _scrape(http, base, params={"token": "s3cret"})


async def test_metrics_can_be_turned_off(make_server) -> None:
    server = await make_server({"metrics": {"enabled": False}}, redis=False)
    async with http_client() as http, \
            http.get(f"{server_url(server)}/metrics") as response:
        assert response.status == 404


def test_the_loop_histogram_reads_as_prometheus_clients() -> None:
    """The fan-out's histogram (no lock: observed on the loop only) scrapes as
    prometheus_client's own does for the same values: on a bound, between, above all."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from echo_server.web.loop_histogram import LoopHistogram
    from echo_server.web.metrics import _LATENCY_BUCKETS

    theirs, ours = CollectorRegistry(), CollectorRegistry(auto_describe=True)
    reference = Histogram("echo_x_seconds", "help", buckets=_LATENCY_BUCKETS, registry=theirs)
    histogram = LoopHistogram("echo_x_seconds", "help", _LATENCY_BUCKETS, ours)
    for value in (0.0, 1e-6, 0.0005, 0.00051, 0.01, 0.3, 10.0, 10.5, 1e9):
        reference.observe(value)
        histogram.observe(value)
    assert generate_latest(ours) == generate_latest(theirs)
