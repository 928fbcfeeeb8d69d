"""Engine.IO 3 / Socket.IO protocol 4 framing, as socket.io-client 2.x sees it on the wire.

Raw clients only (tests/support/raw.py): every byte of the handshake, payload framing,
heartbeat, upgrade and error answers is pinned against protocol sheet §1.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from broadcaster.event import BroadcastEvent
from echo_server.process.server import EchoServer
from echo_server.transport import engine
from echo_server.transport.engine import EngineServer
from tests.conftest import ServerFactory, laravel_message, requires_node, server_url
from tests.support.drivers import NODE_DIR
from tests.support.raw import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Polling,
    RawWebSocket,
    client_frame,
    decode_v3,
    encode_v3,
    http_request,
    js_length,
    open_ws,
    wait_until,
    ws_closed,
    ws_recv,
)

Http = aiohttp.ClientSession
OPEN_KEYS = ["sid", "upgrades", "pingInterval", "pingTimeout"]
UNKNOWN_SID_BODY = b'{"code":1,"message":"Session ID unknown"}'
ASTRAL = "😀 𝄞 𠜎 é"  # emoji, musical symbol, CJK extension B, and one BMP non-ASCII


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def event_json(packet: str) -> list[Any]:
    assert packet.startswith("42"), packet
    return json.loads(packet[2:])


async def subscribed(server: EchoServer, channel: str, count: int = 1) -> None:
    await wait_until(lambda: server.core.rooms.count(channel) >= count,
                     message=f"{count} member(s) in {channel!r}")


async def ws_client(http: Http, server: EchoServer,
                    channel: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """An EIO3 websocket client past its `0` and `40`, optionally subscribed to ``channel``."""
    ws = await open_ws(http, server_url(server))
    opened = await ws_recv(ws)
    assert opened.startswith("0")
    assert await ws_recv(ws) == "40"
    if channel is not None:
        before = server.core.rooms.count(channel)
        await ws.send_str(f'42["subscribe",{{"channel":{json.dumps(channel)}}}]')
        await subscribed(server, channel, before + 1)
    return ws, json.loads(opened[1:])["sid"]


# --------------------------------------------------------------------------- polling handshake


async def test_polling_handshake_is_byte_exact(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    reply, _ = await client.handshake()

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; charset=UTF-8"
    match = re.fullmatch(r"(\d+):(0\{.*\})2:40", reply.text)
    assert match, reply.text
    open_packet = match.group(2)
    assert int(match.group(1)) == js_length(open_packet)
    data = json.loads(open_packet[1:])
    assert list(data) == OPEN_KEYS
    assert data["upgrades"] == ["websocket"]
    assert (data["pingInterval"], data["pingTimeout"]) == (400, 400)
    sid = data["sid"]
    assert isinstance(sid, str) and len(sid) == 20
    assert reply.headers.getall("Set-Cookie") == [f"io={sid}; Path=/; HttpOnly; SameSite=Strict"]

    # The socket id for `/` is the engine sid.
    assert sid in server.core.connections
    assert server.core.connections[sid].id == sid


async def test_socket_id_room_reaches_socket_through_redis(
    make_server: ServerFactory, http: Http, redis: aioredis.Redis
) -> None:
    server = await make_server()
    client = Polling(http, server_url(server))
    await client.handshake()
    assert client.sid is not None
    await redis.publish(client.sid, laravel_message("direct", {"x": 1}))
    packet, _ = await client.get_until(lambda p: p.startswith("42"))
    assert event_json(packet) == ["direct", client.sid, {"x": 1, "socket": None}]


# --------------------------------------------------------------------------- UTF-16 lengths


async def test_outgoing_lengths_count_utf16_units(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    await client.post('42["subscribe",{"channel":"c"}]')
    await subscribed(server, "c")

    data1 = json.dumps({"text": ASTRAL}, ensure_ascii=False, separators=(",", ":"))
    data2 = json.dumps({"after": "😀😀"}, ensure_ascii=False, separators=(",", ":"))
    server.publish(BroadcastEvent("c", "first", data1))
    server.publish(BroadcastEvent("c", "second", data2))
    session = server.part(EngineServer).sessions[client.sid]
    await wait_until(lambda: len(session.queue) == 2, message="both events queued")

    reply = await client.get_reply()
    p1 = f'42["first","c",{data1}]'
    p2 = f'42["second","c",{data2}]'
    assert js_length(p1) == len(p1) + 3  # three astral characters: the test data is right
    assert reply.body == encode_v3([p1, p2]).encode("utf-8")
    assert decode_v3(reply.text) == [p1, p2]


async def test_incoming_lengths_count_utf16_units(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    name = f"room-{ASTRAL}"
    # Two packets in one payload: the second is only found if the first length is right.
    await client.post(f'42["subscribe",{{"channel":"{name}"}}]',
                      '42["subscribe",{"channel":"plain"}]')
    await subscribed(server, "plain")
    assert server.core.rooms.count(name) == 1

    # Python's len() (code points) gives a prefix that splits a character: a parse error.
    other = Polling(http, server_url(server))
    await other.handshake()
    packet = f'42["subscribe",{{"channel":"{name}"}}]'
    await other.post_raw(f"{len(packet)}:{packet}")
    assert other.sid not in server.part(EngineServer).sessions
    assert server.core.rooms.count(name) == 1


# --------------------------------------------------------------------------- b64 and JSONP


async def test_b64_polling_keeps_text_framing(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server), query={"b64": "1"})
    reply, packets = await client.handshake()
    assert reply.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert re.fullmatch(r"\d+:0\{.*\}2:40", reply.text)
    assert packets[1:] == ["40"]
    await client.post('42["subscribe",{"channel":"b"}]')
    await subscribed(server, "b")
    server.publish(BroadcastEvent("b", "ev", '{"s":"😀"}'))
    reply = await client.get_reply()
    assert reply.text == encode_v3(['42["ev","b",{"s":"😀"}]'])


async def test_base64_binary_packets_in_a_polling_payload(
    make_server: ServerFactory, http: Http
) -> None:
    """socket.io-client 2 sends a binary emit over polling (without XHR2) as its event
    header and then `b4<base64>`, the message type and the data. That ended the session
    with "parse error"; now the text packets around it are delivered (the binary event is
    dropped: Echo never sends one) and the session lives on."""
    server = await make_server(redis=False)
    client = Polling(http, server_url(server), query={"b64": "1"})
    await client.handshake()
    await client.post('451-["client-bin",{"_placeholder":true,"num":0}]', "b4AQID",
                      '42["subscribe",{"channel":"mixed"}]')
    await subscribed(server, "mixed")
    assert client.sid in server.part(EngineServer).sessions
    assert server.errors.counts["bad_frame"] == 0
    server.publish(BroadcastEvent("mixed", "ev", "1"))
    assert await client.get() == ['42["ev","mixed",1]']


def jsonp_payload(body: str, index: str = "0") -> str:
    match = re.fullmatch(rf"___eio\[{index}\]\((.*)\);", body, re.S)
    assert match, body
    return str(json.loads(match.group(1)))


def jsonp_escape(data: str) -> str:
    """What engine.io-client 3's JSONP transport puts in the form field ``d``."""
    return data.replace("\\n", "\\\n").replace("\n", "\\n")


async def test_jsonp_polling(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server), query={"j": "0"})
    reply = await http_request(http, "GET", client.url(t="x"))
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/javascript; charset=UTF-8"
    packets = decode_v3(jsonp_payload(reply.text))
    assert packets[1:] == ["40"]
    client.sid = json.loads(packets[0][1:])["sid"]

    # A raw newline (JSON whitespace) and an escaped one (inside the channel name).
    packet = '42["subscribe",\n{"channel":"line\\nbreak"}]'
    form = urllib.parse.urlencode({"d": jsonp_escape(encode_v3([packet]))})
    posted = await client.post_raw(
        form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (posted.status, posted.body) == (200, b"ok")
    await subscribed(server, "line\nbreak")

    # U+2028 is legal JSON but ends a line in old JavaScript: it must arrive escaped.
    server.publish(BroadcastEvent("line\nbreak", "ev", '"a\u2028b"'))
    reply = await client.get_reply()
    assert reply.headers["Content-Type"] == "text/javascript; charset=UTF-8"
    assert "\u2028" not in reply.text
    assert decode_v3(jsonp_payload(reply.text)) == ['42["ev","line\\nbreak","a\u2028b"]']


# --------------------------------------------------------------------------- CORS and origins


async def test_polling_cors_headers(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    origin = "http://app.example.test:8080"
    with_origin = Polling(http, server_url(server), headers={"Origin": origin})
    reply, _ = await with_origin.handshake()
    assert reply.headers["Access-Control-Allow-Origin"] == origin
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"
    posted = await with_origin.post_raw(encode_v3(["2"]))
    assert posted.headers["Access-Control-Allow-Origin"] == origin
    assert posted.headers["Access-Control-Allow-Credentials"] == "true"

    without = Polling(http, server_url(server))
    reply, _ = await without.handshake()
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in reply.headers


async def test_origin_allow_list(make_server: ServerFactory, http: Http) -> None:
    server = await make_server({"socketio": {"origins": ["http://allowed.test:8080"]}},
                               redis=False)
    url = server_url(server)
    allowed = {"Origin": "http://allowed.test:8080"}
    foreign = {"Origin": "http://evil.test"}

    reply = await http_request(http, "GET", f"{url}/socket.io/?EIO=3&transport=polling",
                               headers=foreign)
    assert reply.status == 403
    assert reply.json()["code"] == 4
    assert not server.part(EngineServer).sessions

    client = Polling(http, url, headers=allowed)
    reply, _ = await client.handshake()
    assert reply.headers["Access-Control-Allow-Origin"] == "http://allowed.test:8080"

    refused = await RawWebSocket.connect(server, headers=foreign)
    assert refused.status == 403
    await refused.close()
    accepted = await RawWebSocket.connect(server, headers=allowed)
    assert accepted.status == 101
    assert (await accepted.recv_text()).startswith("0{")
    await accepted.close()


async def test_origin_allow_list_falls_back_to_referer(
    make_server: ServerFactory, http: Http
) -> None:
    """socket.io 2 checks `origin || referer`: a page's Referer counts when Origin is absent."""
    server = await make_server({"socketio": {"origins": ["http://allowed.test:8080"]}},
                               redis=False)
    url = f"{server_url(server)}/socket.io/?EIO=3&transport=polling"
    reply = await http_request(http, "GET", url, headers={"Referer": "http://evil.test/page"})
    assert reply.status == 403
    reply = await http_request(http, "GET", url,
                               headers={"Referer": "http://allowed.test:8080/page"})
    assert reply.status == 200
    refused = await RawWebSocket.connect(server, headers={"Referer": "http://evil.test/x"})
    assert refused.status == 403
    await refused.close()


# --------------------------------------------------------------------------- websocket


async def test_websocket_open_then_connect_then_pong(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(redis=False)
    ws = await open_ws(http, server_url(server))
    opened = await ws_recv(ws)
    assert opened.startswith("0")
    data = json.loads(opened[1:])
    assert list(data) == OPEN_KEYS
    assert data["upgrades"] == []
    assert (data["pingInterval"], data["pingTimeout"]) == (400, 400)
    assert await ws_recv(ws) == "40"
    assert data["sid"] in server.core.connections

    await ws.send_str("2")
    assert await ws_recv(ws) == "3"
    await ws.send_str("2")
    assert await ws_recv(ws) == "3"
    await ws.close()


# A raw Node `ws` client that listens for messages only once `open` has fired (a promise
# later): it opens 20 sockets one after another and prints the first message each listener
# got, `-` for none within 3 s (and what a listener attached from the start got first).
LATE_LISTENER = """
const WebSocket = require('ws');
const { once } = require('events');
(async () => {
  for (let i = 0; i < 20; i++) {
    const ws = new WebSocket(process.argv[1]);
    let early = '-';
    ws.once('message', (data) => { early = String(data).slice(0, 2); });
    await once(ws, 'open');
    const late = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve('-'), 3000);
      ws.once('message', (data) => { clearTimeout(timer); resolve(String(data).slice(0, 2)); });
    });
    console.log(late === '0{' ? late : `${late}(${early})`);
    ws.terminate();
  }
})();
"""


@requires_node
async def test_raw_ws_client_listening_after_open_gets_the_open_packet(
    make_server: ServerFactory,
) -> None:
    """The 101 and the open packet went out in one write: `ws` then emits the message in
    the same tick as `open`, and a listener attached after `open` missed the handshake
    (closed by ping timeout), as the engine.io v3 suite's plain websocket test does. The
    open packet now goes out in a write of its own. (EIO4 keeps one write: every EIO4
    client waits for the open packet before it speaks, and a second write costs each
    connection a system call; docs/compatibility.md.)"""
    server = await make_server(redis=False)
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=3&transport=websocket"
    proc = await asyncio.create_subprocess_exec(
        "node", "-e", LATE_LISTENER, url, cwd=str(NODE_DIR), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert out.decode().split() == ["0{"] * 20


async def test_a_server_stopping_sends_a_held_open_packet_before_going_away(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server stopped between an EIO3 websocket's 101 and its open packet (held a moment
    after it, above) still sends the open packet, then closes with 1001: the client sees a
    session open and end, as any other, rather than a close before any handshake."""
    monkeypatch.setattr(engine, "OPEN_PACKET_GAP", 5.0)  # the stop surely comes first
    server = await make_server(redis=False)
    ws = await RawWebSocket.connect(server)
    assert ws.status == 101
    await server.stop()
    assert (await ws.recv_text()).startswith('0{"sid":')
    assert await ws.recv_text() == "40"
    assert await ws.wait_closed() == 1001
    await ws.close()


async def test_upgrade_from_polling(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    await client.post('42["subscribe",{"channel":"up"}]')
    await subscribed(server, "up")
    session = server.part(EngineServer).sessions[client.sid]

    pending = asyncio.create_task(client.get())
    await wait_until(lambda: session.poll is not None, message="the GET to be held")
    ws = await open_ws(http, server_url(server), sid=client.sid)
    await ws.send_str("2probe")
    assert await ws_recv(ws) == "3probe"
    assert await asyncio.wait_for(pending, 3) == ["6"]

    # Published between the probe and the upgrade: delivered on the websocket, not lost.
    server.publish(BroadcastEvent("up", "during", "1"))
    await wait_until(lambda: session.queue, message="the event to be queued")
    await ws.send_str("5")
    assert await ws_recv(ws) == '42["during","up",1]'

    server.publish(BroadcastEvent("up", "after", "2"))
    assert await ws_recv(ws) == '42["after","up",2]'
    await ws.send_str("2")
    assert await ws_recv(ws) == "3"

    # The polling transport is gone, and a second websocket for the sid is refused.
    reply = await client.get_reply()
    assert reply.status == 400
    assert reply.body == b'{"code":3,"message":"Bad request"}'
    second = await RawWebSocket.connect(server, f"EIO=3&transport=websocket&sid={client.sid}")
    assert second.status == 400
    await second.close()
    await ws.send_str("2")
    assert await ws_recv(ws) == "3"
    await ws.close()


async def test_client_close_packet(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    session = server.part(EngineServer).sessions[client.sid]
    pending = asyncio.create_task(client.get())
    await wait_until(lambda: session.poll is not None, message="the GET to be held")
    await client.post("1")
    # engine.io ends the pending GET with a noop when the client itself closes.
    assert await asyncio.wait_for(pending, 3) == ["6"]
    reply = await client.get_reply()
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)

    ws, sid = await ws_client(http, server)
    await ws.send_str("1")
    assert await ws_closed(ws) == []
    assert sid not in server.part(EngineServer).sessions


@pytest.mark.parametrize("ending", ["timeout", "stray packet"])
async def test_unfinished_upgrade_is_dropped_and_polling_carries_on(
    make_server: ServerFactory, http: Http, ending: str
) -> None:
    server = await make_server({"socketio": {"upgradeTimeout": 300}}, redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    await client.post('42["subscribe",{"channel":"stay"}]')
    await subscribed(server, "stay")
    session = server.part(EngineServer).sessions[client.sid]

    ws = await open_ws(http, server_url(server), sid=client.sid)
    await ws.send_str("2probe")
    assert await ws_recv(ws) == "3probe"
    started = time.monotonic()
    if ending == "stray packet":
        await ws.send_str("4hello")  # anything but `5` ends the probe
    assert await ws_closed(ws) == []
    if ending == "timeout":  # no `5` within upgradeTimeout
        assert time.monotonic() - started >= 0.25
    assert client.sid in server.part(EngineServer).sessions

    # Polling is back to normal: a GET is held again (not answered with noops at once)...
    pending = asyncio.create_task(client.get())
    await wait_until(lambda: session.poll is not None or pending.done(),
                     message="the GET to be held or answered")
    assert not pending.done(), pending.result()
    # ...and gets the next event.
    server.publish(BroadcastEvent("stay", "ev", "1"))
    assert await asyncio.wait_for(pending, 3) == ['42["ev","stay",1]']


# --------------------------------------------------------------------------- heartbeat


async def test_websocket_without_pings_is_closed_after_interval_plus_timeout(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(redis=False)
    ws, sid = await ws_client(http, server)
    started = time.monotonic()
    assert await ws_closed(ws, timeout=3) == []
    elapsed = time.monotonic() - started
    assert 0.7 <= elapsed <= 2.5, elapsed  # pingInterval + pingTimeout = 0.8 s
    assert sid not in server.part(EngineServer).sessions
    assert sid not in server.core.connections


async def test_pinging_websocket_stays_open(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    ws, sid = await ws_client(http, server)
    deadline = time.monotonic() + 1.6  # twice pingInterval + pingTimeout
    while time.monotonic() < deadline:
        await ws.send_str("2")
        assert await ws_recv(ws) == "3"
        await asyncio.sleep(0.2)
    assert sid in server.part(EngineServer).sessions
    await ws.close()


async def test_polling_without_pings_expires(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    started = time.monotonic()
    await wait_until(lambda: client.sid not in server.part(EngineServer).sessions, timeout=3,
                     message="the silent session to expire")
    assert time.monotonic() - started >= 0.7
    reply = await client.get_reply()
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)


# --------------------------------------------------------------------------- Engine.IO errors


async def test_engine_error_answers(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    base = f"{server_url(server)}/socket.io/"

    for query in ("EIO=3&transport=carrier-pigeon", "EIO=3"):
        reply = await http_request(http, "GET", f"{base}?{query}")
        assert reply.status == 400
        assert reply.headers["Content-Type"].startswith("application/json")
        assert reply.body == b'{"code":0,"message":"Transport unknown"}'

    reply = await http_request(http, "GET", f"{base}?EIO=3&transport=polling&sid=nope",
                               headers={"Origin": "http://a.test"})
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)
    assert reply.headers["Access-Control-Allow-Origin"] == "http://a.test"
    assert reply.headers["Access-Control-Allow-Credentials"] == "true"
    reply = await http_request(http, "POST", f"{base}?EIO=3&transport=polling&sid=nope",
                               data=b"1:2")
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)

    bad_method = b'{"code":2,"message":"Bad handshake method"}'
    reply = await http_request(http, "POST", f"{base}?EIO=3&transport=polling", data=b"1:2")
    assert (reply.status, reply.body) == (400, bad_method)
    reply = await http_request(http, "OPTIONS", f"{base}?EIO=3&transport=polling")
    assert (reply.status, reply.body) == (400, bad_method)
    assert not server.part(EngineServer).sessions

    # A real CORS preflight is answered, and opens nothing.
    reply = await http_request(http, "OPTIONS", f"{base}?EIO=3&transport=polling",
                               headers={"Origin": "http://a.test",
                                        "Access-Control-Request-Method": "POST"})
    assert 200 <= reply.status < 300
    assert reply.headers["Access-Control-Allow-Origin"] == "http://a.test"
    assert not server.part(EngineServer).sessions


async def test_overlapping_polls_close_the_session(make_server: ServerFactory, http: Http) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    session = server.part(EngineServer).sessions[client.sid]
    pending = asyncio.create_task(client.get())
    await wait_until(lambda: session.poll is not None, message="the GET to be held")
    second = await client.get_reply()
    assert (second.status, second.body) == (500, b"")  # engine.io's bare 500
    assert await asyncio.wait_for(pending, 3) == ["1"]
    reply = await client.get_reply()
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)
    assert server.errors.counts["bad_request"] >= 1


# --------------------------------------------------------------------------- limits, bad input


async def test_websocket_message_over_limit_closes_only_that_connection(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server({"socketio": {"maxHttpBufferSize": 1000},
                                "limits": {"maxChannelNameLength": 1000}}, redis=False)
    victim, victim_sid = await ws_client(http, server, "c")
    bystander, _ = await ws_client(http, server, "c")

    # Exactly at the limit is fine.
    template = '42["subscribe",{"channel":"%s"}]'
    name = "x" * (1000 - len(template % ""))
    await victim.send_str(template % name)
    await subscribed(server, name)

    await victim.send_str(template % (name + "y"))
    msg = await asyncio.wait_for(victim.receive(), 3)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1009
    assert server.errors.counts["oversized"] == 1
    await wait_until(lambda: victim_sid not in server.part(EngineServer).sessions)

    server.publish(BroadcastEvent("c", "still", "true"))
    assert await ws_recv(bystander) == '42["still","c",true]'
    assert server.core.rooms.count("c") == 1
    await bystander.close()


async def test_polling_post_over_limit_closes_only_that_session(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server({"socketio": {"maxHttpBufferSize": 1000}}, redis=False)
    victim = Polling(http, server_url(server))
    await victim.handshake()
    bystander = Polling(http, server_url(server))
    await bystander.handshake()
    await bystander.post('42["subscribe",{"channel":"c"}]')
    await subscribed(server, "c")

    packet = '42["subscribe",{"channel":"%s"}]'
    exact = packet % ("x" * (996 - len(packet % "")))  # "996:" + 996 chars = 1000 bytes
    assert len(encode_v3([exact])) == 1000
    await victim.post(exact)

    over = await victim.post_raw(encode_v3([packet % ("x" * 1000)]))
    assert over.status == 413
    assert victim.sid not in server.part(EngineServer).sessions
    assert server.errors.counts["oversized"] == 1

    server.publish(BroadcastEvent("c", "still", "true"))
    assert await bystander.get() == ['42["still","c",true]']


@pytest.mark.parametrize("bad", ["42garbage", "hello", "42[]", "invalid-utf8", "unmasked"])
async def test_unparsable_frame_closes_only_that_connection(
    make_server: ServerFactory, http: Http, bad: str
) -> None:
    server = await make_server(redis=False)
    bystander, _ = await ws_client(http, server, "c")
    victim = await RawWebSocket.connect(server)
    assert victim.status == 101
    victim_sid = json.loads((await victim.recv_text())[1:])["sid"]
    assert await victim.recv_text() == "40"

    if bad == "invalid-utf8":
        victim.send_frame(OP_TEXT, b'42["subscribe",{"channel":"\xff\xfe"}]')
    elif bad == "unmasked":
        victim.send_frame(OP_TEXT, b'42["subscribe",{"channel":"c"}]', mask=False)
    else:
        victim.send_text(bad)
    code = await victim.wait_closed()
    expected = {"invalid-utf8": 1007, "unmasked": 1002}.get(bad)
    if expected is not None:
        assert code == expected
    await wait_until(lambda: victim_sid not in server.part(EngineServer).sessions)
    assert server.errors.counts["bad_frame"] == 1
    await victim.close()

    server.publish(BroadcastEvent("c", "still", "true"))
    assert await ws_recv(bystander) == '42["still","c",true]'
    await bystander.send_str("2")
    assert await ws_recv(bystander) == "3"
    await bystander.close()


@pytest.mark.parametrize("body", [encode_v3(["42garbage"]), encode_v3(["hello"]),
                                  encode_v3(["42[]"]), "abc", "9:2"])
async def test_unparsable_polling_payload_closes_that_session(
    make_server: ServerFactory, http: Http, body: str
) -> None:
    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    await client.post_raw(body)
    assert client.sid not in server.part(EngineServer).sessions
    assert server.errors.counts["bad_frame"] == 1
    reply = await client.get_reply()
    assert (reply.status, reply.body) == (400, UNKNOWN_SID_BODY)


async def test_ack_id_is_accepted_and_never_answered(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(redis=False)
    ws, _ = await ws_client(http, server)
    await ws.send_str('421["subscribe",{"channel":"acked"}]')
    await subscribed(server, "acked")
    server.publish(BroadcastEvent("acked", "ev", "{}"))
    assert await ws_recv(ws) == '42["ev","acked",{}]'  # not a `431[...]` first
    await ws.close()


async def test_other_namespace_is_refused_and_root_keeps_working(
    make_server: ServerFactory, http: Http
) -> None:
    server = await make_server(redis=False)
    ws, _ = await ws_client(http, server)
    await ws.send_str("40/other,")
    assert await ws_recv(ws) == '44/other,"Invalid namespace"'
    await ws.send_str('42["subscribe",{"channel":"root"}]')
    await subscribed(server, "root")
    server.publish(BroadcastEvent("root", "ev", "1"))
    assert await ws_recv(ws) == '42["ev","root",1]'
    await ws.close()


async def test_frames_of_every_length_encoding(make_server: ServerFactory, http: Http) -> None:
    """7-bit, 16-bit and 64-bit payload lengths, both directions."""
    server = await make_server({"limits": {"maxChannelNameLength": 70_000}}, redis=False)
    ws, _ = await ws_client(http, server)
    for size in (100, 300, 70_000):
        name = "n" * size
        await ws.send_str(f'42["subscribe",{{"channel":"{name}"}}]')
        await subscribed(server, name)
        data = json.dumps("d" * size)
        server.publish(BroadcastEvent(name, "big", data))
        assert await ws_recv(ws) == f'42["big","{name}",{data}]'
    await ws.close()


async def test_fragments_and_control_frames(make_server: ServerFactory) -> None:
    server = await make_server(redis=False)
    # The first frame travels in the same packet as the upgrade request.
    ws = await RawWebSocket.connect(server, early=client_frame(OP_TEXT, b"2"))
    assert ws.status == 101
    assert (await ws.recv_text()).startswith("0{")
    assert await ws.recv_text() == "40"
    assert await ws.recv_text() == "3"

    # A fragmented message with a ping between its fragments.
    ws.send_frame(OP_TEXT, b'42["subscribe",', fin=False)
    ws.send_frame(OP_PING, b"hi")
    ws.send_frame(OP_CONTINUATION, b'{"channel":"frag"}]')
    assert await ws.recv_frame() == (OP_PONG, b"hi")
    await subscribed(server, "frag")

    # A client close is answered with a close frame and ends the session.
    ws.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    assert await ws.wait_closed() == 1000
    await wait_until(lambda: not server.part(EngineServer).sessions)
    await ws.close()


async def test_permessage_deflate_is_declined(make_server: ServerFactory) -> None:
    server = await make_server(redis=False)
    ws = await RawWebSocket.connect(
        server, headers={"Sec-WebSocket-Extensions":
                         "permessage-deflate; client_max_window_bits"})
    assert ws.status == 101
    assert "sec-websocket-extensions" not in ws.headers
    assert (await ws.recv_text()).startswith("0{")  # and its RSV1 bit is clear
    assert await ws.recv_text() == "40"
    await ws.close()


async def test_polling_client_that_stops_polling_is_dropped_at_the_queue_bound(
        make_server: ServerFactory, http: Http) -> None:
    """Memory stays bounded for a client that never comes back for its packets."""
    from broadcaster.event import BroadcastEvent
    from echo_server.transport.engine import MAX_QUEUED_PACKETS

    server = await make_server(redis=False)
    client = Polling(http, server_url(server))
    await client.handshake()
    await client.post('42["subscribe",{"channel":"c"}]')
    await wait_until(lambda: server.core.rooms.count("c") == 1, message="subscribed")
    for n in range(MAX_QUEUED_PACKETS + 1):
        server.publish(BroadcastEvent("c", "e", str(n)))
    await wait_until(lambda: client.sid not in server.part(EngineServer).sessions,
                     message="the session dropped")
    assert server.errors.counts["slow_client"] == 1
