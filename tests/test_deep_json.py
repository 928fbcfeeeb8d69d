"""JSON nested too deeply to decode is a bad message like any other: dropped, counted, and the
rest of its batch delivered without a reconnect, on every source that decodes JSON (Redis
Pub/Sub, Redis Streams, PostgreSQL, the HTTP API's bus); and the bound itself, at the codec.

Before the bound, such a message raised RecursionError out of the decoder: the source runner
took it for a lost connection, dropped every good event read with it and reconnected (a
stream even read the same unacknowledged entry again after every reconnect)."""

from __future__ import annotations

import json
from collections.abc import Callable

import asyncpg
import pytest
import redis.asyncio as aioredis

from broadcaster.event import BadMessage, BroadcastEvent, parse_laravel_message
from echo_common import jsoncodec
from echo_common.jsoncodec import MAX_DEPTH
from echo_server.process.ingest import SourceRunner
from echo_server.process.server import EchoServer
from tests.conftest import ServerFactory, _until, laravel_message, server_url
from tests.support.http import http_client
from tests.support.waits import redis_runner, wait_until
from tests.test_sources import pending, pg_source, started, stream_url

PREFIX = "laravel_database_"
CHANNEL = "leads-management"
GOOD = 100  # good events on each side of the poison one
POISON_DEPTH = 3000  # beyond every parser's own limit (orjson and simdjson stop at 1024)


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def around_poison(good: Callable[[int], str], poison: str) -> list[str]:
    """GOOD good payloads, the poison one, GOOD more: sent at once, they are read together."""
    return ([good(n) for n in range(GOOD)] + [poison]
            + [good(n) for n in range(GOOD, 2 * GOOD)])


def recorded(runner: SourceRunner) -> list[BroadcastEvent]:
    """Every event the runner hands to the hub from now on."""
    seen: list[BroadcastEvent] = []
    deliver = runner.deliver

    def recording(batch: list[BroadcastEvent]) -> object:
        seen.extend(batch)
        return deliver(batch)

    runner.deliver = recording
    return seen


async def assert_only_the_poison_was_lost(server: EchoServer, runner: SourceRunner,
                                          seen: list[BroadcastEvent]) -> None:
    # Whichever comes first: every good event, or the outage the poison used to cause.
    await wait_until(lambda: len(seen) >= 2 * GOOD or runner.health.outages > 0,
                     "the good events arrived or the source went down", timeout=10)
    assert runner.health.outages == 0, runner.health.last_error
    assert runner.health.connected
    assert [json.loads(event.data)["n"] for event in seen] == list(range(2 * GOOD))
    assert dict(server.errors.counts) == {"bad_json": 1}


# --------------------------------------------------------------------------- sources

async def test_redis_pubsub_poison_message_costs_only_itself(
        make_server: ServerFactory, redis: aioredis.Redis) -> None:
    server = await make_server({"databaseConfig": {"redis": {"keyPrefix": PREFIX}}})
    runner = redis_runner(server)
    seen = recorded(runner)
    poison = '{"event":"e","data":' + nested(POISON_DEPTH) + "}"
    async with redis.pipeline(transaction=True) as pipe:  # one MULTI: one reply, one read
        for payload in around_poison(lambda n: laravel_message("e", {"n": n}), poison):
            pipe.publish(PREFIX + CHANNEL, payload)
        await pipe.execute()
    await assert_only_the_poison_was_lost(server, runner, seen)


async def test_redis_stream_poison_entry_costs_only_itself_and_is_acknowledged(
        make_server: ServerFactory, redis: aioredis.Redis, redis_url: str) -> None:
    stream = "s-poison"
    await redis.delete(stream)
    server = await make_server({"sources": [stream_url(redis_url, stream)],
                                "instanceId": "poison"})
    runner = await started(server, "redis-stream")
    seen = recorded(runner)
    async with redis.pipeline(transaction=True) as pipe:
        for data in around_poison(lambda n: json.dumps({"n": n, "socket": None}),
                                  nested(POISON_DEPTH)):
            pipe.xadd(stream, {"channels": json.dumps([CHANNEL]), "event": "e", "data": data})
        await pipe.execute()
    await assert_only_the_poison_was_lost(server, runner, seen)

    async def all_acknowledged() -> bool:
        return await pending(redis, stream, "echo-poison") == 0

    # The poison entry too: left pending, it would be read again after every reconnect.
    await _until(all_acknowledged, "every entry was acknowledged", timeout=5)


async def test_postgres_poison_notification_costs_only_itself(
        make_server: ServerFactory, postgres_url: str) -> None:
    server = await make_server({"sources": [pg_source(postgres_url, "echo_poison")]},
                               redis=False)
    runner = await started(server, "postgres")
    seen = recorded(runner)

    def message(n: int) -> str:
        return json.dumps({"channels": [CHANNEL], "event": "e", "data": {"n": n},
                           "socket": None})

    # Under NOTIFY's 8000 bytes; sent in one transaction, all are delivered at its commit.
    poison = '{"channels":["' + CHANNEL + '"],"event":"e","data":' + nested(POISON_DEPTH) + "}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("SELECT pg_notify('echo_poison', p) FROM unnest($1::text[]) "
                           "WITH ORDINALITY AS t(p, i) ORDER BY i",
                           around_poison(message, poison))
    finally:
        await conn.close()
    await assert_only_the_poison_was_lost(server, runner, seen)


async def test_http_api_refuses_a_deeply_nested_body_and_keeps_serving(
        make_server: ServerFactory) -> None:
    server = await make_server(redis=False)
    url = f"{server_url(server)}/apps/test-app/events?auth_key=test-key"
    deep = '{"channel":"' + CHANNEL + '","name":"e","data":' + nested(POISON_DEPTH, "1") + "}"
    async with http_client() as http:
        async with http.post(url, data=deep,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
        async with http.post(url, json={"channel": CHANNEL, "name": "e",
                                        "data": {"n": 1}}) as response:
            assert response.status == 200


# --------------------------------------------------------------------------- the bound

@pytest.mark.parametrize("kind", [str, bytes])
def test_loads_takes_max_depth_and_refuses_one_level_more(kind: type) -> None:
    def text(depth: int) -> str | bytes:
        document = nested(depth, "1")
        return document if kind is str else document.encode()

    assert jsoncodec.loads(text(MAX_DEPTH)) is not None
    for depth in (MAX_DEPTH + 1, 1024, POISON_DEPTH):
        with pytest.raises(ValueError, match="nested"):
            jsoncodec.loads(text(depth))


def test_whatever_loads_returns_dumps_can_encode() -> None:
    # orjson encodes 254 levels at most; deeper values take the standard encoder, which
    # recurses once per level: the bound keeps that well within Python's recursion limit.
    deepest = jsoncodec.loads(nested(MAX_DEPTH, "1"))
    assert jsoncodec.dumps(deepest) == nested(MAX_DEPTH, "1")


def test_brackets_inside_strings_are_not_nesting() -> None:
    inside = '"' + "[{" * POISON_DEPTH + '\\"' + "[" * POISON_DEPTH + '"'
    assert jsoncodec.loads(nested(MAX_DEPTH, inside))[0] is not None
    assert jsoncodec.loads(nested(MAX_DEPTH, inside).encode()) is not None


def test_objects_nest_as_arrays_do() -> None:
    def objects(depth: int) -> str:
        return '{"a":' * depth + "1" + "}" * depth

    assert jsoncodec.loads(objects(MAX_DEPTH))
    with pytest.raises(ValueError, match="nested"):
        jsoncodec.loads(objects(MAX_DEPTH + 1))


def test_documents_orjson_refuses_are_bounded_too() -> None:
    # An integer beyond 64 bits: orjson refuses it, the standard library (which recurses)
    # decides.
    big = "123456789012345678901234567890"
    assert jsoncodec.loads(nested(MAX_DEPTH, big))
    with pytest.raises(ValueError, match="nested"):
        jsoncodec.loads(nested(POISON_DEPTH, big))


@pytest.mark.parametrize("text", ['"\\ud800"', '["x\\udc00"]', '{"\\uDBFF":1}'])
def test_lone_surrogates_are_invalid_json(text: str) -> None:
    """Valid JSON text, but no string UTF-8 can hold: refused where it is decoded, not
    where it is next encoded (a Redis key, a frame, a metrics label)."""
    with pytest.raises(ValueError, match="surrogate"):
        jsoncodec.loads(text)
    assert jsoncodec.loads('"\\ud83d\\ude00 \\\\ud800"') == "😀 \\ud800"


def test_without_the_fast_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsoncodec, "_orjson", None)
    monkeypatch.setattr(jsoncodec, "_fast", None)
    assert jsoncodec.loads(nested(MAX_DEPTH, "1"))
    with pytest.raises(ValueError, match="nested"):
        jsoncodec.loads(nested(POISON_DEPTH, "1"))


@pytest.mark.parametrize("fast", [True, False], ids=["simdjson", "general"])
def test_laravel_message_nested_beyond_every_bound_is_bad_json(
        fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fast:
        monkeypatch.setattr(jsoncodec, "_fast", None)
    elif jsoncodec._fast is None:
        pytest.skip("pysimdjson is not installed")

    def message(depth: int) -> bytes:  # the object around data is one level
        return ('{"event":"e","data":' + nested(depth - 1) + ',"socket":null}').encode()

    assert json.loads(parse_laravel_message("c", message(MAX_DEPTH)).data) == \
        json.loads(nested(MAX_DEPTH - 1))
    depths = [POISON_DEPTH] if fast else [MAX_DEPTH + 1, POISON_DEPTH]
    for depth in depths:
        with pytest.raises(BadMessage) as refused:
            parse_laravel_message("c", message(depth))
        assert refused.value.kind == "bad_json"


IS_JSON_CASES = [
    '{"lead":{"id":42,"name":"Zeynep Kaya"}}', "1", " 1 ", "-0", '"text"', "null", "[]",
    "not json", "", "{", "[1,2", "NaN", "1e400", "123456789012345678901234567890",
    '"\\ud800"', '["x\\udc00"]', '"\\ud83d\\ude00"', '{"a":1,"a":2}', "1.0e", "\ud800",
    nested(MAX_DEPTH, "1"), nested(MAX_DEPTH + 1, "1"), nested(1024, "1"),
    nested(POISON_DEPTH, "1"),
]


@pytest.mark.parametrize("fast", [True, False], ids=["simdjson", "general"])
@pytest.mark.parametrize("text", IS_JSON_CASES)
def test_is_json_says_what_loads_does(text: str, fast: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pusher event's ``data`` goes out as it is when it is JSON: simdjson only checks it,
    and must never take what ``loads`` refuses."""
    if not fast:
        monkeypatch.setattr(jsoncodec, "_fast", None)
    try:
        jsoncodec.loads(text)
        expected = True
    except ValueError:
        expected = False
    assert jsoncodec.is_json(text) is expected


def test_loads_unbounded_leaves_nesting_to_orjson() -> None:
    """For a body only strings are taken out of: orjson's own 1,024 levels, and whatever
    orjson refuses decided by ``loads`` (with its bound)."""
    assert jsoncodec.loads_unbounded(nested(1024, "1").encode())
    big = "123456789012345678901234567890"
    for refused in (nested(POISON_DEPTH, "1"), nested(POISON_DEPTH, big), "NaN", "{"):
        with pytest.raises(ValueError):
            jsoncodec.loads_unbounded(refused.encode())
