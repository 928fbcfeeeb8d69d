"""The request parser's own query-string reader must read every query as the standard
library's ``parse_qsl(keep_blank_values=True)`` does (later values win, as in a dict)."""

from __future__ import annotations

import urllib.parse

import pytest

from echo_server.transport.http import parse_query


@pytest.mark.parametrize("query", [
    "EIO=4&transport=websocket",
    "EIO=3&transport=polling&t=NkX1aB2&b64=1&sid=abc-_DEF",
    "a=1&a=2&b",
    "x=%20y+z&%41=1",
    "&&a=&=b&c==d",
    "name=Ay%C5%9Fe%2B1&token=a.b.c",
    "q=%zz&r=%E2%82",  # invalid escapes: kept / replaced exactly as unquote does
    "a=1;b=2",
    "",
])
def test_query_reads_as_parse_qsl(query: str) -> None:
    assert parse_query(query) == dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
