"""The hot path's parser (pysimdjson, the ``fast`` extra) must decide every message exactly as
the general path (orjson, else the standard library) does: same event, same data as a client's
JSON.parse sees it, same socket, same rejection. It only takes messages it is sure of and hands
everything else to the general path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broadcaster.event import BadMessage, encode_laravel_message, parse_laravel_message
from echo_common import jsoncodec
from tests.support.seed_events import capacity_updated, lead_assigned

pytest.importorskip("simdjson", reason="the fast extra's pysimdjson is not installed")

LARAVEL = [
    encode_laravel_message("lead.assigned", lead_assigned()),
    encode_laravel_message("admin.capacity.updated", capacity_updated(), socket="abc.123"),
    encode_laravel_message("App\\Events\\Path/With/Slashes", {"url": "https://x.test/a?b=1"}),
    encode_laravel_message("e", {"emoji": "🎯", "ctl": "\n\t\x01", "quote": '"\\'}),
    encode_laravel_message("e", {"list": [1, -2, 3.5, 1e25, 0.1, True, None, [], {}]}),
]

# Shapes the fast path must hand over (or agree on) rather than guess.
ODD = [
    '{"event":"e","data":1,"data":2,"socket":null}',  # duplicate: JSON.parse keeps the last
    '{"event":"a","event":"b","data":{},"socket":null}',
    '{"event":"e","data":{"n":1}}',  # no socket member
    '{"event":"e","data":{"n":1},"socket":null,"extra":1}',
    '{"socket":null,"data":[1,2],"event":"e"}',  # other key order
    ' {"event": "e", "data": {"n": 1}, "socket": null} ',  # whitespace
    '{"event":"e","data":"just text","socket":null}',
    '{"event":"e","data":12,"socket":"x"}',
    '{"event":"e","data":null,"socket":""}',
    '{"event":"e","data":{"big":18446744073709551616},"socket":null}',  # beyond 64 bits
    '{"event":"e","data":{"big":-9223372036854775809},"socket":null}',
    '{"event":"e","data":{"x":1e400},"socket":null}',  # Infinity: null, as JSON.stringify
    '{"event":"e","data":{"x":NaN},"socket":null}',
    '{"event":"e","data":{"s":"\\ud800"},"socket":null}',  # lone surrogate
    '{"event":"e","data":{"s":"\\ud83d\\ude00"},"socket":null}',
    '{"event":"","data":{},"socket":null}',
    '{"event":5,"data":{},"socket":null}',
    '{"event":"e","data":{},"socket":5}',
    '[1,2,3]',
    '"text"',
    '{"event":"e","data":{"n":1},"socket":null} trailing',
    '{"event":"e","data":{"n":1',
]


def _outcome(payload: bytes) -> tuple[Any, ...]:
    try:
        event = parse_laravel_message("leads", payload)
    except BadMessage as exc:
        return ("rejected", exc.kind)
    return (event.channel, event.event, json.loads(event.data), event.socket)


@pytest.mark.parametrize("text", LARAVEL + ODD)
def test_fast_parser_agrees_with_the_general_path(text: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    payload = text.encode("utf-8", "surrogatepass")
    fast = _outcome(payload)
    monkeypatch.setattr(jsoncodec, "_fast", None)
    assert fast == _outcome(payload)


@pytest.mark.parametrize("text", LARAVEL)
def test_laravel_messages_take_the_fast_path(text: str) -> None:
    found = jsoncodec.members(text.encode(), ("event", "data", "socket"), "data")
    assert found is not None
    event, data, socket = found
    message = json.loads(text)
    assert (event, json.loads(data), socket) == (message["event"], message["data"],
                                                 message["socket"])
    # Compact, and non-ASCII as UTF-8 rather than PHP's \u escapes: what JSON.stringify
    # writes in the reference.
    assert data == json.dumps(message["data"], ensure_ascii=False,
                              separators=(",", ":")).encode()


def test_a_parse_that_failed_midway_does_not_break_the_next() -> None:
    assert jsoncodec.members(b'{"event":"e","data":{"n":1}}', ("event", "data", "socket"),
                             "data") is None
    assert jsoncodec.members(b"not json", ("event",), "event") is None
    assert _outcome(LARAVEL[0].encode())[1] == "lead.assigned"
